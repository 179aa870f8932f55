"""Image -> net input for Caffe classifiers, in the three test-time modes people actually used.

The same weights give different predictions under different preprocessing, so each mode is named,
described (``MODES``) and recorded in the result (``Prepared.mode``/``description``): a number can
always be traced to the protocol that produced it.

Images are H x W x 3 in BGR order (OpenCV's convention) with values on 0..255, uint8 or float.
Bilinear resizing is ``cv2.resize(..., INTER_LINEAR)``. Caffe's Python ``caffe.io.resize_image``
uses scikit-image instead, which differs slightly at the borders and, in newer scikit-image, blurs
before downscaling; the crop geometry and the mean handling below are Caffe's exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CaffeCompatError

_TEMPLATES = {
    "oversample": (
        "oversample: Caffe Classifier.predict(oversample=True): resize to {size}x{size} "
        "(bilinear), crop {crop}x{crop} at the four corners and the centre, plus the horizontal "
        "mirror of each (10 crops per image); average the 10 predictions"
    ),
    "center": (
        "center: resize to {size}x{size} (bilinear), one {crop}x{crop} crop at offset "
        "({off}, {off}), as Caffe's test-phase DataTransformer does"
    ),
    "opencv": (
        "opencv: cv2.dnn.blobFromImage(image, 1.0, ({crop}, {crop}), mean, swapRB=False): the "
        "whole image resized to {crop}x{crop} (bilinear), per-channel mean subtracted; one input "
        "per image"
    ),
}
_MEAN_TEMPLATES = {
    "window": (
        "mean image subtracted at each crop's own window, mean[:, y:y+{crop}, x:x+{crop}], before "
        "mirroring (Caffe's DataTransformer: what the net saw in training)"
    ),
    "resize": (
        "mean image resized to {crop}x{crop} and subtracted from every crop, mirrored or not "
        "(the authors' demo with their patched caffe/io.py)"
    ),
}


def describe(mode: str, mean_crop: str | None = None, *, size: int = 256, crop: int = 227) -> str:
    """One line naming a mode (and how a mean image meets the crops) with its geometry."""
    text = _TEMPLATES[mode].format(size=size, crop=crop, off=(size - crop) // 2)
    if mean_crop is not None and mode != "opencv":
        text += "; " + _MEAN_TEMPLATES[mean_crop].format(crop=crop)
    return text


MODES: dict[str, str] = {mode: describe(mode) for mode in _TEMPLATES}
MEAN_CROPS: dict[str, str] = {how: _MEAN_TEMPLATES[how].format(crop=227) for how in _MEAN_TEMPLATES}


@dataclass(frozen=True)
class Prepared:
    """A batch ready for the net: ``data`` is float32 (images * crops) x 3 x crop x crop."""

    data: np.ndarray
    mode: str
    crops: int  # consecutive inputs per image
    description: str

    def average(self, outputs: Any) -> Any:
        """Per-image mean of the net's outputs over this batch's crops."""
        return average_crops(outputs, self.crops)


def average_crops(outputs: Any, crops: int) -> Any:
    """Average ``crops`` consecutive rows per image: (images * crops, ...) -> (images, ...).

    Works on numpy arrays and torch tensors alike (the crops of one image are consecutive).
    """
    if crops < 1 or outputs.shape[0] % crops:
        raise CaffeCompatError(
            f"{outputs.shape[0]} outputs do not split into groups of {crops} crops per image"
        )
    return outputs.reshape(outputs.shape[0] // crops, crops, *outputs.shape[1:]).mean(1)


def crop_offsets(size: int, crop: int, mode: str) -> list[tuple[int, int]]:
    """(y, x) of each crop in a size x size image: Caffe's order for ``oversample`` is top-left,
    top-right, bottom-left, bottom-right, centre (``caffe.io.oversample``)."""
    centre = (size - crop) // 2
    if mode == "center":
        return [(centre, centre)]
    far = size - crop
    return [(0, 0), (0, far), (far, 0), (far, far), (centre, centre)]


def _image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise CaffeCompatError(
            f"expected an H x W x 3 BGR image, got an array of shape {list(image.shape)}"
        )
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise CaffeCompatError(f"expected a uint8 or float image, got dtype {image.dtype}")
    return image


def _mean(mean: np.ndarray | Sequence[float]) -> np.ndarray:
    """(3,) per-channel values or a (3, H, W) mean image, as float32."""
    array = np.asarray(mean, dtype=np.float32)
    if array.shape == (3,) or (array.ndim == 3 and array.shape[0] == 3):
        return array
    raise CaffeCompatError(
        f"mean must be 3 per-channel values (B, G, R) or a 3 x H x W mean image, got shape "
        f"{list(array.shape)}"
    )


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def _caffe_crops(
    image: np.ndarray, mean: np.ndarray, mode: str, size: int, crop: int, mean_crop: str
) -> np.ndarray:
    """The crops of the size x size resize (C x crop x crop, float32), mean per ``mean_crop``."""
    chw = first_resize(image, mode, size=size, crop=crop).transpose(2, 0, 1)
    if mean.ndim == 1:
        per_crop = None
        shared = mean[:, None, None]
    elif mean_crop == "window":
        if mean.shape[1:] != (size, size):
            raise CaffeCompatError(
                f"mean_crop='window' needs a {size}x{size} mean image, got "
                f"{mean.shape[1]}x{mean.shape[2]}; pass mean_crop='resize' or per-channel values"
            )
        per_crop, shared = mean, None
    else:
        per_crop = None
        shared = _resize(mean.transpose(1, 2, 0), crop, crop).transpose(2, 0, 1)
    crops = []
    for y, x in crop_offsets(size, crop, mode):
        piece = chw[:, y : y + crop, x : x + crop]
        if per_crop is not None:
            piece = piece - per_crop[:, y : y + crop, x : x + crop]
        crops.append(piece)
    if mode == "oversample":
        crops += [piece[:, :, ::-1] for piece in crops]
    batch = np.stack(crops)
    if shared is not None:
        batch = batch - shared
    return np.ascontiguousarray(batch, dtype=np.float32)


def first_resize(image: np.ndarray, mode: str, *, size: int = 256, crop: int = 227) -> np.ndarray:
    """The first step of ``mode``: the whole image resized to what the mode crops from, size x
    size float32 for the Caffe modes, crop x crop in the image's own dtype for ``opencv`` (as
    blobFromImage resizes). Applied to its own result it changes nothing, so a face may be
    shrunk early (the Ray engine ships faces this way) and preprocessed later."""
    if mode == "opencv":
        return _resize(image, crop, crop)
    return _resize(image.astype(np.float32, copy=False), size, size)


def first_resize_shape(mode: str, *, size: int = 256, crop: int = 227) -> tuple[int, int, int]:
    """The shape ``first_resize`` gives in ``mode``."""
    side = crop if mode == "opencv" else size
    return (side, side, 3)


def blob_from_image(
    image: np.ndarray, height: int, width: int, mean: np.ndarray | Sequence[float] = (0, 0, 0)
) -> np.ndarray:
    """``cv2.dnn.blobFromImage(image, 1.0, (width, height), mean, swapRB=False)``: the image
    resized in its own dtype (bilinear), then float32, minus the per-channel ``mean`` (a mean
    image counts by its channel averages); 1 x 3 x height x width."""
    values = _mean(mean)
    if values.ndim != 1:
        values = values.reshape(3, -1).mean(axis=1, dtype=np.float64).astype(np.float32)
    resized = _resize(_image(image), height, width).astype(np.float32)
    return np.ascontiguousarray((resized - values).transpose(2, 0, 1)[None])


def _opencv(image: np.ndarray, mean: np.ndarray, crop: int) -> np.ndarray:
    """The ``opencv`` mode: ``blob_from_image`` at crop x crop."""
    return blob_from_image(first_resize(image, "opencv", crop=crop), crop, crop, mean)


def preprocess(
    images: np.ndarray | Sequence[np.ndarray],
    mode: str = "oversample",
    *,
    mean: np.ndarray | Sequence[float],
    mean_crop: str = "window",
    size: int = 256,
    crop: int = 227,
) -> Prepared:
    """Turn one BGR image (H x W x 3) or a list of them into the net's input batch.

    ``mode``: ``oversample`` (10 crops per image), ``center`` or ``opencv`` (see ``MODES``).
    ``mean``: a 3 x 256 x 256 mean image (``caffe_compat.io.read_mean``) or B, G, R values.
    ``mean_crop`` says how a mean *image* meets a crop in the Caffe modes: ``window`` (default:
    the crop's own window, as in training) or ``resize`` (the authors' demo). ``opencv`` takes
    per-channel values; a mean image is reduced to its per-channel averages (for the Levi-Hassner
    mean these are exactly the constants OpenCV users pass).
    """
    if mode not in MODES:
        raise CaffeCompatError(f"unknown preprocessing mode {mode!r}; modes: {', '.join(MODES)}")
    if mean_crop not in MEAN_CROPS:
        raise CaffeCompatError(
            f"mean_crop must be one of {', '.join(MEAN_CROPS)}, not {mean_crop!r}"
        )
    if not 0 < crop <= size:
        raise CaffeCompatError(f"crop {crop} must be between 1 and the resize size {size}")
    single = isinstance(images, np.ndarray) and images.ndim == 3
    batch = [_image(images)] if single else [_image(i) for i in images]
    if not batch:
        raise CaffeCompatError("no images given")
    values = _mean(mean)
    if mode == "opencv":
        parts = [_opencv(image, values, crop) for image in batch]
        description = describe(mode, size=size, crop=crop)
    else:
        parts = [_caffe_crops(image, values, mode, size, crop, mean_crop) for image in batch]
        description = describe(mode, None if values.ndim == 1 else mean_crop, size=size, crop=crop)
        if values.ndim == 1:
            description += "; per-channel mean values subtracted"
    data = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    return Prepared(data, mode, parts[0].shape[0], description)
