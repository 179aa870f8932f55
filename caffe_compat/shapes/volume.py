"""facebook/C3D's 3-D layers on 5-D blobs N x C x L x H x W: ``Convolution3D``, ``Pooling3D`` and
the ``VideoData`` clip source (C3D-v1.0 and C3D-v1.1, ``src/caffe/layers/convolution3d_layer.cpp``,
``pool3d_layer.cpp``, ``video_data_layer.cpp``).

Convolution3D is BVLC's N-D Convolution in disguise: one kernel ``kernel_depth x kernel_size^2``,
pad ``temporal_pad, pad, pad``, stride ``temporal_stride, stride, stride``, output sizes rounded
down, weights ``O x C x kd x k x k`` (``filter_group`` only splits C3D's GEMM into row blocks of
the same weight; ``group`` is never read). Its bias blob is ``1 x 1 x 1 x 1 x O``; the rewrite
hands Convolution the ``O`` values. The other back ends run Convolution's entry on the rewritten
node (the float64 reference one clip at a time, as C3D does).

Pooling3D has rules of its own: H and W are rounded up with padding ``pad`` (AVE only), L rounded
up without padding, no window dropped at the end (BVLC's Pooling drops one that starts in the
padding), windows clipped to the input, AVE divided by the window clipped to ``size + pad``.

C3D v1.0 writes nets in the V1 format: enum types (CONVOLUTION3D, POOLING3D, VIDEO_DATA, numbered
where BVLC has others; caffe_compat/io/upgrade.py) and the 3-D settings inside convolution_param
and pooling_param: the V1 upgrade moves them into C3D v1.1's messages by name; a binary net's,
whose numbers BVLC reads as other fields, each type's ``dialect`` fact re-reads with C3D's own
numbering, and says so.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..io.upgrade import c3d_settings
from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from .conv import rescale_conv
from .data import data_shapes

C3D = "facebook/C3D (v1.0 V1 enum, v1.1 type string)"


def _five_d(shape: Shape, layer_type: str) -> None:
    if len(shape) != 5:
        raise ValueError(f"{layer_type} reads a 5-D blob N x C x L x H x W, not {list(shape)}")


# --- Convolution3D ---------------------------------------------------------------------------


def conv3d_as_convolution(node: Node, inputs: list[Shape]) -> Node:
    """The Convolution (3 spatial axes) that Convolution3DLayer computes, its bias blob flat."""
    p = node.param.convolution3d_param
    if not inputs:
        raise ValueError("Convolution3D needs a bottom")
    _five_d(inputs[0], "Convolution3D")
    if not p.kernel_size or not p.kernel_depth:
        raise ValueError("convolution3d_param needs kernel_size and kernel_depth (no defaults)")
    if not p.stride or not p.temporal_stride:
        raise ValueError("stride and temporal_stride must be positive")
    if not p.num_output:
        raise ValueError("num_output must be set and positive")
    if p.num_output % max(int(p.filter_group), 1) or not p.filter_group:
        raise ValueError(f"num_output {p.num_output} is not divisible by filter_group")
    param = caffe_pb2.LayerParameter()
    param.CopyFrom(node.param)
    param.ClearField("convolution3d_param")
    param.type = "Convolution"
    c = param.convolution_param
    c.Clear()
    c.num_output = p.num_output
    c.bias_term = p.bias_term
    c.kernel_size.extend([p.kernel_depth, p.kernel_size, p.kernel_size])
    c.pad.extend([p.temporal_pad, p.pad, p.pad])
    c.stride.extend([p.temporal_stride, p.stride, p.stride])
    c.weight_filler.CopyFrom(p.weight_filler)
    c.bias_filler.CopyFrom(p.bias_filler)
    blobs = list(node.blobs)
    if len(blobs) > 1 and blobs[1].ndim != 1:
        blobs[1] = blobs[1].reshape(-1)
    return dataclasses.replace(node, type="Convolution", param=param, blobs=blobs)


@register("Convolution3D", "shape")
def _convolution3d(node: Node, inputs: list[Shape]) -> LayerShapes:
    """Convolution's rule on the rewritten node, with C3D's bias blob shape 1 x 1 x 1 x 1 x O
    (Caffe's blob loading checks shapes: a C3D caffemodel holds it so)."""
    from .conv import _conv_shapes

    rewritten = conv3d_as_convolution(node, inputs)
    shapes = _conv_shapes(rewritten, inputs, transposed=False)
    params = list(shapes.params)
    if len(params) > 1:
        params[1] = (1, 1, 1, 1, *params[1])
    return LayerShapes(shapes.outputs, params)


def rescale_conv3d(node: Node, scale, shift) -> np.ndarray:
    """Convolution's rescale, the bias kept in C3D's 1 x 1 x 1 x 1 x O shape (folding appends a
    flat one)."""
    applied = rescale_conv(node, scale, shift)
    if len(node.blobs) > 1:
        node.blobs[1] = node.blobs[1].reshape(1, 1, 1, 1, -1)
    return applied


def _conv3d_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    p = layer.convolution3d_param
    return [p.weight_filler, p.bias_filler] if p.bias_term else [p.weight_filler]


def _columns(node: Node, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
    """vol2col's buffer for one clip: C x kd x k x k rows at every output position. C3D, ONNX
    Runtime and the float64 reference (at twice the bytes) unfold one clip at a time; torch's
    oneDNN path builds none. It does not grow with the batch (the budget reads it per item of
    the declared batch)."""
    p = node.param.convolution3d_param
    kernel = int(p.kernel_depth) * int(p.kernel_size) ** 2
    return in_shapes[0][1] * kernel * math.prod(out_shapes[0][2:])


def _conv3d_dialect(layer: caffe_pb2.LayerParameter, blobs: int | None) -> str | None:
    """C3D v1.0's settings left in convolution_param: a binary net's, at C3D's numbers (a text
    net's moved when the V1 net was upgraded), or a V2 layer's."""
    return c3d_settings(layer, binary=True)


describe(
    "Convolution3D",
    alias_of="Convolution",
    rewrite=conv3d_as_convolution,
    param_message="convolution3d_param",
    bias_term="bias_term",
    fillers=_conv3d_fillers,
    rescale=rescale_conv3d,
    folds_batchnorm=True,
    workspace=_columns,
    columns=_columns,
    dialect=_conv3d_dialect,
    bottoms=1,
    tops=1,
    origin=C3D,
)


# --- Pooling3D -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pool3dGeometry:
    """Pooling3DLayer's windows per axis (L, H, W): kernel, stride, pad and output size."""

    method: int
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    pad: tuple[int, int, int]
    size: tuple[int, int, int]
    out: tuple[int, int, int]

    def spans(self, axis: int) -> list[tuple[int, int, int]]:
        """(start, end, divisor) per output index of one axis, as Pooling3DLayer's loops set
        them: ``end`` clipped to the input, the AVE divisor to ``size + pad``."""
        k, s, p, n = self.kernel[axis], self.stride[axis], self.pad[axis], self.size[axis]
        rows = []
        for o in range(self.out[axis]):
            start = o * s - p
            end = min(start + k, n + p)
            rows.append((max(start, 0), min(end, n), end - start))
        return rows

    @property
    def pad_end(self) -> tuple[int, int, int]:
        """Padding after the input that makes every window whole (for the back ends)."""
        return tuple(
            max((o - 1) * s + k - n - p, 0)
            for o, s, k, n, p in zip(self.out, self.stride, self.kernel, self.size, self.pad)
        )


def pool3d_geometry(p: caffe_pb2.Pooling3DParameter, shape: Shape) -> Pool3dGeometry:
    """Pooling3DLayer::LayerSetUp for a bottom of ``shape`` (refusing what C3D cannot run)."""
    _five_d(shape, "Pooling3D")
    if p.pool == caffe_pb2.Pooling3DParameter.STOCHASTIC:
        raise ValueError("STOCHASTIC Pooling3D: C3D's forward does not implement it")
    if not p.kernel_size or not p.kernel_depth:
        raise ValueError("pooling3d_param needs kernel_size and kernel_depth (no defaults)")
    if not p.stride or not p.temporal_stride:
        raise ValueError("stride and temporal_stride must be positive")
    if p.pad and p.pool != caffe_pb2.Pooling3DParameter.AVE:
        raise ValueError("Padding implemented only for average pooling (C3D's CHECK)")
    kernel = (int(p.kernel_depth), int(p.kernel_size), int(p.kernel_size))
    stride = (int(p.temporal_stride), int(p.stride), int(p.stride))
    pad = (0, int(p.pad), int(p.pad))
    size = tuple(int(d) for d in shape[2:])
    if any(n + 2 * q < k for n, k, q in zip(size, kernel, pad)):
        raise ValueError(f"kernel {list(kernel)} is larger than the padded input {list(size)}")
    out = tuple(-(-(n + 2 * q - k) // s) + 1 for n, k, s, q in zip(size, kernel, stride, pad))
    for axis, (o, s, n, q) in enumerate(zip(out, stride, size, pad)):
        start = (o - 1) * s - q  # C3D keeps a last window BVLC's Pooling would drop
        if start >= n + q or (start >= n and p.pool == caffe_pb2.Pooling3DParameter.MAX):
            raise ValueError(
                f"the last window of axis {axis + 2} holds no input (stride {s} beyond the "
                f"kernel): C3D gives it {'-FLT_MAX' if q == 0 else 'a divisor of 0'}"
            )
    return Pool3dGeometry(int(p.pool), kernel, stride, pad, size, out)  # type: ignore[arg-type]


@register("Pooling3D", "shape")
def _pooling3d(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    geom = pool3d_geometry(node.param.pooling3d_param, shape)
    return LayerShapes([(shape[0], shape[1], *geom.out)], [])


def _pool3d_dialect(layer: caffe_pb2.LayerParameter, blobs: int | None) -> str | None:
    """C3D v1.0's Pooling3D settings left in pooling_param (see _conv3d_dialect)."""
    return c3d_settings(layer, binary=True)


describe(
    "Pooling3D",
    param_message="pooling3d_param",
    dialect=_pool3d_dialect,
    bottoms=1,
    tops=1,
    origin=C3D,
)


# --- VideoData -------------------------------------------------------------------------------


def video_data_shapes(
    layer: caffe_pb2.LayerParameter, notes: list[str], labels: bool = False
) -> list[Shape | None]:
    """C3D's VideoDataLayer: clips ``batch x 3 x new_length x crop x crop`` (else new_height x
    new_width), from image_data_param (v1.0) or video_data_param (v1.1); SSD's VideoData (a
    webcam or file, no length) is shaped as the other data layers are."""
    image, video = layer.image_data_param, layer.video_data_param
    if image.new_length:
        p, crop = image, int(image.crop_size or layer.transform_param.crop_size)
        batch = int(image.batch_size)
    elif video.new_length:
        p, crop = video, int(layer.transform_param.crop_size or video.crop_size)
        batch = int(video.batch_size)
    elif layer.HasField("image_data_param"):
        # C3D v1.0's form with no length: a binary net, whose field 11 (new_length) BVLC's
        # schema reads as is_color, a bool: the clip length is lost.
        notes.append(
            f'input "{layer.top[0]}" from VideoData layer "{layer.name}": the clip length '
            "(new_length) is unknown; pass --input-shape N,3,L,H,W"
        )
        return [None] * len(layer.top)
    else:
        return data_shapes(layer, notes, labels)
    height, width = (crop, crop) if crop else (int(p.new_height), int(p.new_width))
    tops: list[Shape | None] = [None] * len(layer.top)
    if not height or not width:
        return tops
    channels = 3 if getattr(p, "is_color", True) else 1
    batch = batch or 1
    tops[0] = (batch, channels, int(p.new_length), height, width)
    notes.append(
        f'input "{layer.top[0]}" from VideoData layer "{layer.name}": clips of '
        f"{p.new_length} frames of {height} x {width}, {channels} channels assumed (C3D)"
    )
    if labels and len(tops) > 1:
        tops[1] = (batch,)
    return tops


describe(
    "VideoData",
    role="data",
    data_shape=video_data_shapes,
    bottoms=0,
    tops=(1, None),
    origin="SSD (webcam/file frames) and facebook/C3D (clips: new_length given)",
)
