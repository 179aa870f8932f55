"""Shape rules for Convolution and Deconvolution (and the forks' depthwise aliases)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from ._synthesis import rescale_blobs, scale_rows
from .geometry import canonical_axis, conv_geometry


def _conv_common(node: Node, inputs: list[Shape]) -> tuple[Shape, int, int, tuple[int, ...]]:
    p = node.param.convolution_param
    (shape,) = set(inputs) if len(set(inputs)) == 1 else (None,)
    if shape is None:
        raise ValueError("all bottoms of a convolution must have the same shape")
    axis = canonical_axis(int(p.axis), len(shape))
    channels = shape[axis]
    group = int(p.group)
    if group <= 0 or channels % group:
        raise ValueError(f"input channels {channels} are not divisible by group {group}")
    if not p.HasField("num_output") or p.num_output <= 0:
        raise ValueError("num_output must be set and positive")
    if p.num_output % group:
        raise ValueError(f"num_output {p.num_output} is not divisible by group {group}")
    return shape, axis, group, shape[axis + 1 :]


def _conv_shapes(node: Node, inputs: list[Shape], transposed: bool) -> LayerShapes:
    """Convolution and Deconvolution: one geometry, mirrored output size and weight layout."""
    p = node.param.convolution_param
    shape, axis, group, spatial = _conv_common(node, inputs)
    geom = conv_geometry(p, len(spatial))
    out_spatial = geom.deconv_output(spatial) if transposed else geom.output(spatial)
    if any(s <= 0 for s in out_spatial):
        raise ValueError(f"output size {list(out_spatial)} is not positive")
    n_out = int(p.num_output)
    if transposed:  # Caffe stores deconvolution weights as (C_in, C_out / group, k...)
        weight: Shape = (shape[axis], n_out // group, *geom.kernel)
    else:
        weight = (n_out, shape[axis] // group, *geom.kernel)
    params: list[Shape] = [weight, (n_out,)] if p.bias_term else [weight]
    top = (*shape[:axis], n_out, *out_spatial)
    return LayerShapes([top] * len(inputs), params)


@register("Convolution", "shape")
def _convolution(node: Node, inputs: list[Shape]) -> LayerShapes:
    return _conv_shapes(node, inputs, transposed=False)


@register("Deconvolution", "shape")
def _deconvolution(node: Node, inputs: list[Shape]) -> LayerShapes:
    return _conv_shapes(node, inputs, transposed=True)


def as_grouped_convolution(node: Node, inputs: list[Shape]) -> Node:
    """The forks' depthwise layer as the Convolution it is: same wiring, weights and settings,
    ``group`` = input channels (a ``group`` that says otherwise is an error)."""
    p = node.param.convolution_param
    if not inputs:
        raise ValueError("a depthwise convolution needs a bottom")
    channels = inputs[0][canonical_axis(int(p.axis), len(inputs[0]))]
    if p.HasField("group") and p.group != channels:
        raise ValueError(f"group {p.group} contradicts a depthwise layer over {channels} channels")
    param = type(node.param)()
    param.CopyFrom(node.param)
    param.type = "Convolution"
    param.convolution_param.group = channels
    return dataclasses.replace(node, type="Convolution", param=param)


def conv_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    """BaseConvolutionLayer: weight_filler, then bias_filler when there is a bias."""
    c = layer.convolution_param
    return [c.weight_filler, c.bias_filler] if c.bias_term else [c.weight_filler]


def conv_channel_axis(node: Node, ndim: int) -> int:
    """A convolution's output channels are on its ``axis`` (1 unless set)."""
    return canonical_axis(int(node.param.convolution_param.axis), ndim)


def rescale_conv(node: Node, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Output channel c of a convolution is weight slice c (axis 0) plus bias c."""
    return rescale_blobs(node, scale_rows(node.blobs[0], scale, 0), scale, shift)


def rescale_deconv(node: Node, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Deconvolution weights are (C_in, C_out / group, k...): output channel g * C_out/group + j
    is slice j of group g's rows."""
    weight = node.blobs[0].astype(np.float64)
    group = int(node.param.convolution_param.group)
    cin, per = weight.shape[0], weight.shape[1]
    grouped = weight.reshape(group, cin // group, per, *weight.shape[2:])
    factors = scale.reshape(group, 1, per, *([1] * (weight.ndim - 2)))
    return rescale_blobs(node, (grouped * factors).reshape(weight.shape), scale, shift)


def _dilated_deconv(node: Node) -> str | None:
    if any(d > 1 for d in node.param.convolution_param.dilation):
        return "OpenCV sizes a dilated Deconvolution as if undilated"
    return None


# The float64 reference builds im2col's columns for at most this many values at once (64 MiB):
# a convolution over a big map runs in slabs of output rows, each its own GEMM (the same dot
# product per output value; only the scratch shrinks, from 4.2 GiB for SegNet's 7 x 7 decoder
# at 360 x 480).
COLUMN_SLAB = 1 << 23


def column_rows(channels: int, kernel: tuple[int, ...], n: int, out: tuple[int, ...]) -> int:
    """Rows of the first output axis one slab of columns holds (all of them for a small map,
    at least one)."""
    per_row = channels * math.prod(kernel) * n * math.prod(out[1:])
    return max(1, min(out[0], COLUMN_SLAB // max(per_row, 1))) if out else 1


def column_items(channels: int, kernel: tuple[int, ...], n: int, out: tuple[int, ...]) -> int:
    """Items one slab of columns holds where one output row of every item is more than a slab
    (a convolution over hundreds of pooled ROIs): all ``n`` otherwise, at least one."""
    per_item_row = channels * math.prod(kernel) * math.prod(out[1:])
    return max(1, min(n, COLUMN_SLAB // max(per_item_row, 1)))


def whole_columns(node: Node, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
    """im2col's whole column buffer (PyTorch's CPU convolution without oneDNN builds it): the
    input channels times the kernel taps at every output position, for one bottom."""
    p = node.param.convolution_param
    shape, out = in_shapes[0], out_shapes[0]
    axis = canonical_axis(int(p.axis), len(shape))
    kernel = conv_geometry(p, len(shape) - axis - 1).kernel
    return math.prod(shape[: axis + 1]) * math.prod(kernel) * math.prod(out[axis + 1 :])


def conv_columns(node: Node, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
    """The float64 reference's im2col columns (``column_rows`` output rows at a time: the input
    channels times the kernel taps at each of their positions) and its padded copy of the
    input, for one bottom. PyTorch (oneDNN), ONNX Runtime (MLAS) and OpenCV build no whole
    column buffer (measured: see synth's ``calibration_peak``)."""
    p = node.param.convolution_param
    shape, out = in_shapes[0], out_shapes[0]
    axis = canonical_axis(int(p.axis), len(shape))
    geom = conv_geometry(p, len(shape) - axis - 1)
    n, channels = math.prod(shape[:axis]), shape[axis]
    spatial = tuple(out[axis + 1 :])
    n = column_items(channels, geom.kernel, n, spatial)
    rows = column_rows(channels, geom.kernel, n, spatial)
    columns = n * channels * math.prod(geom.kernel) * rows * math.prod(spatial[1:])
    padded = n * channels * math.prod(s + 2 * q for s, q in zip(shape[axis + 1 :], geom.pad))
    return columns + (padded if any(geom.pad) else 0)


def deconv_rows(outputs: int, kernel: tuple[int, ...], n: int, spatial: tuple[int, ...]) -> int:
    """Input rows of the first spatial axis one slab of a transposed convolution's columns
    holds (COLUMN_SLAB values: output channels times kernel taps at each input position)."""
    per_row = outputs * math.prod(kernel) * n * math.prod(spatial[1:])
    return max(1, min(spatial[0], COLUMN_SLAB // max(per_row, 1))) if spatial else 1


def deconv_columns(node: Node, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
    """col2im's whole column buffer of a transposed convolution (PyTorch's CPU kernel without
    oneDNN builds it): output channels times the kernel taps at every input position, for
    one bottom."""
    p = node.param.convolution_param
    shape, out = in_shapes[0], out_shapes[0]
    axis = canonical_axis(int(p.axis), len(shape))
    kernel = conv_geometry(p, len(shape) - axis - 1).kernel
    return math.prod(out[: axis + 1]) * math.prod(kernel) * math.prod(shape[axis + 1 :])


def deconv_slab_columns(node: Node, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
    """The float64 reference's columns of a transposed convolution, ``deconv_rows`` input
    rows at a time."""
    p = node.param.convolution_param
    shape, out = in_shapes[0], out_shapes[0]
    axis = canonical_axis(int(p.axis), len(shape))
    kernel = conv_geometry(p, len(shape) - axis - 1).kernel
    n, outputs, spatial = math.prod(shape[:axis]), out[axis], tuple(shape[axis + 1 :])
    rows = deconv_rows(outputs, kernel, n, spatial)
    return n * outputs * math.prod(kernel) * rows * math.prod(spatial[1:])


def _opencv_thin_depthwise(node: Node, in_shapes: list[Shape]) -> str | None:
    """Measured on OpenCV 4.14: its depthwise 3 x 3 kernel computes another function on a map
    one pixel high or wide (off by up to 4 on unit weights, or reads memory it never wrote:
    1e24); a full convolution, 5 x 5 or 1 x 1 kernels, or a map 2 x 2 and up agree to 5e-7."""
    p = node.param.convolution_param
    shape = in_shapes[0] if in_shapes else None
    if shape is None or len(shape) != 4 or canonical_axis(int(p.axis), 4) != 1:
        return None
    channels = shape[1]
    group = int(p.group) if p.HasField("group") else 1
    try:
        kernel = conv_geometry(p, 2).kernel
    except ValueError:
        return None
    if channels > 1 and group == channels and tuple(kernel) == (3, 3) and min(shape[2:]) == 1:
        return "OpenCV's depthwise 3x3 kernel miscomputes a map one pixel high or wide"
    return None


# Caffe's BaseConvolutionLayer: one or more bottoms, each with its own top.
CONV_COUNTS = {"bottoms": (1, None), "tops": (1, None), "same_count": True}
CONV_SETTINGS = {
    "param_message": "convolution_param",
    "bias_term": "bias_term",
    "fillers": conv_fillers,
    "channel_axis": conv_channel_axis,
}
CONV_FACTS = {
    **CONV_SETTINGS,
    "rescale": rescale_conv,
    "folds_batchnorm": True,
    "opencv_tested": True,
    "opencv_shape_deviation": _opencv_thin_depthwise,
    "workspace": conv_columns,
    "columns": whole_columns,
    **CONV_COUNTS,
}
describe("Convolution", float32_weights=True, **CONV_FACTS)
describe(
    ("ConvolutionDepthwise", "DepthwiseConvolution"),
    alias_of="Convolution",
    rewrite=as_grouped_convolution,
    **CONV_FACTS,
)
describe(
    "Deconvolution",
    rescale=rescale_deconv,
    opencv_deviation=_dilated_deconv,
    opencv_tested=True,
    workspace=deconv_slab_columns,
    columns=deconv_columns,
    **CONV_SETTINGS,
    **CONV_COUNTS,
)
