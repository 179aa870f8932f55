"""Caffe's ``DataTransformer``: crop, mirror, mean subtraction and scale of one C x H x W item.

Caffe's order and arithmetic, in float32: the crop window is chosen first (random in TRAIN,
centred in TEST: ``(H - crop) / 2``), the mean is subtracted at the window's own position of the
full-size mean image (or one ``mean_value`` per channel, one value meaning all channels), the
result is multiplied by ``scale``, and a mirrored item (``mirror: true`` and a coin flip, in
either phase) is flipped left-right. A mean image must match the item's full size, as Caffe
CHECKs.

Randomness comes from a generator the caller derives from the record's position in the stream,
not from Caffe's global RNG, so a run is reproducible and independent of how many workers decode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import NetDefinitionError
from ...io import read_mean
from ...proto import caffe_pb2


@dataclass(frozen=True)
class Where:
    """The layer a transform belongs to, for error lines."""

    layer: str
    layer_type: str
    path: str | None = None

    def error(self, reason: str) -> NetDefinitionError:
        return NetDefinitionError(
            reason, layer=self.layer, layer_type=self.layer_type, path=self.path
        )


class DataTransformer:
    """One layer's ``transform_param`` in one phase (``"TRAIN"`` or ``"TEST"``)."""

    def __init__(self, param: caffe_pb2.TransformationParameter, phase: str, where: Where):
        self.phase = phase
        self.where = where
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.crop_h = int(param.crop_h or param.crop_size)
        self.crop_w = int(param.crop_w or param.crop_size)
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        if self.force_color and self.force_gray:
            raise where.error("transform_param: cannot set both force_color and force_gray")
        if param.HasField("mean_file") and len(param.mean_value):
            raise where.error("transform_param: cannot specify mean_file and mean_value at once")
        self.mean: np.ndarray | None = None
        if param.HasField("mean_file"):
            self.mean = read_mean(param.mean_file)  # (C, H, W) float32; one line if unreadable
        self.mean_values = np.asarray(list(param.mean_value), dtype=np.float32)

    @property
    def needs_random(self) -> bool:
        return self.mirror or (self.phase == "TRAIN" and bool(self.crop_h))

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The transformed item's (C, H, W) for an input of ``shape`` (Caffe's
        ``InferBlobShape``)."""
        c, h, w = shape
        if self.crop_h:
            if h < self.crop_h or w < self.crop_w:
                raise self.where.error(
                    f"crop {self.crop_h}x{self.crop_w} is larger than the {h}x{w} item"
                )
            return c, self.crop_h, self.crop_w
        return c, h, w

    def __call__(self, item: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Transform one (C, H, W) item (uint8 or float) into float32."""
        c, h, w = item.shape
        _, out_h, out_w = self.output_shape((c, h, w))
        # Caffe draws the mirror coin first, then the crop offsets.
        flip = self.mirror and rng is not None and bool(rng.integers(2))
        top, left = 0, 0
        if self.crop_h:
            if self.phase == "TRAIN" and rng is not None:
                top = int(rng.integers(h - out_h + 1))
                left = int(rng.integers(w - out_w + 1))
            else:
                top, left = (h - out_h) // 2, (w - out_w) // 2
        window = item[:, top : top + out_h, left : left + out_w].astype(np.float32)
        if self.mean is not None:
            if self.mean.shape != (c, h, w):
                raise self.where.error(
                    f"the mean image is {'x'.join(map(str, self.mean.shape))} but the items "
                    f"are {c}x{h}x{w} (Caffe subtracts a mean of the items' full size)"
                )
            window -= self.mean[:, top : top + out_h, left : left + out_w]
        elif self.mean_values.size:
            values = self.mean_values
            if values.size not in (1, c):
                raise self.where.error(
                    f"{values.size} mean_value entries for {c}-channel items: give 1 or {c}"
                )
            window -= values.reshape(-1, 1, 1) if values.size > 1 else values[0]
        if self.scale != 1:
            window *= self.scale
        if flip:
            window = window[:, :, ::-1]
        return np.ascontiguousarray(window)
