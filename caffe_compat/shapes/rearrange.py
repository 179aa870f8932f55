"""Shape rules and facts for the layers that move values without computing new ones:
ShuffleChannel (ShuffleNet), Reorg (YOLOv2 ports, darknet's reorg), Tiling (the highway-driving
fork's depth-to-space, VPGNet), Transpose and Reverse
(caffe_ocr), Flip (happynear/caffe-windows) and BVLC's Im2col (which CTPN uses). docs/forks.md
gives the forks and sources."""

from __future__ import annotations

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from .geometry import ConvGeometry, canonical_axis, conv_geometry


@register("ShuffleChannel", "shape")
def _shuffle_channel(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    group = int(node.param.shuffle_channel_param.group)
    if len(shape) < 2:
        raise ValueError(f"ShuffleChannel needs a channel axis, got {list(shape)}")
    if group < 1 or shape[1] % group:
        raise ValueError(f"group {group} must divide the {shape[1]} channels")
    return LayerShapes([shape], [])


def tile_dim(p: caffe_pb2.TilingParameter) -> int:
    """Tiling's ``tile_dim`` (the fork CHECKs it is set and positive)."""
    t = int(p.tile_dim)
    if t < 1:
        raise ValueError(f"tiling_param.tile_dim must be set and positive, not {t}")
    return t


@register("Tiling", "shape")
def _tiling(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    t = tile_dim(node.param.tiling_param)
    if len(shape) != 4:
        raise ValueError(f"Tiling needs a 4-D bottom, got {list(shape)}")
    n, c, h, w = shape
    if c % (t * t):
        raise ValueError(f"the {c} channels must be a multiple of tile_dim^2 = {t * t}")
    return LayerShapes([(n, c // (t * t), h * t, w * t)], [])


def reorg_stride(node: Node) -> int:
    p = node.param.reorg_param
    if p.reverse:
        raise ValueError("reorg_param { reverse: true } (the inverse reorg) is not supported")
    if p.stride < 1:
        raise ValueError(f"stride {p.stride} must be positive")
    return int(p.stride)


@register("Reorg", "shape")
def _reorg(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    s = reorg_stride(node)
    if len(shape) != 4:
        raise ValueError(f"Reorg needs a 4-D bottom, got {list(shape)}")
    n, c, h, w = shape
    if h % s or w % s or c % (s * s):
        raise ValueError(
            f"stride {s} must divide the height {h} and width {w}, and its square the {c} channels"
        )
    return LayerShapes([(n, c * s * s, h // s, w // s)], [])


def transpose_axes(node: Node, ndim: int) -> list[int]:
    dims = [int(d) for d in node.param.transpose_param.dim]
    if sorted(dims) != list(range(ndim)):
        raise ValueError(f"transpose_param dim {dims} must order the bottom's {ndim} axes")
    return dims


@register("Transpose", "shape")
def _transpose(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    return LayerShapes([tuple(shape[d] for d in transpose_axes(node, len(shape)))], [])


def reverse_axis(node: Node, ndim: int) -> int:
    axis = int(node.param.reverse_param.axis)
    if axis < 0:
        raise ValueError(f"reverse_param axis {axis} must not be negative")
    return canonical_axis(axis, ndim, "reverse_param axis")


@register("Reverse", "shape")
def _reverse(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    reverse_axis(node, len(shape))
    return LayerShapes([shape], [])


describe(
    "ShuffleChannel",
    origin="ShuffleNet ports (farmingyard/ShuffleNet)",
    param_message="shuffle_channel_param",
    opencv_tested=True,
    bottoms=1,
    tops=1,
)
describe(
    "Reorg",
    origin="YOLOv2 Caffe ports: darknet's reorg",
    param_message="reorg_param",
    opencv_tested=True,
    bottoms=1,
    tops=1,
)
describe(
    "Tiling",
    origin="the highway-driving fork (VPGNet: SeokjuLee/VPGNet)",
    param_message="tiling_param",
    bottoms=1,
    tops=1,
    validate=lambda layer: tile_dim(layer.tiling_param) and None,
)
describe("Transpose", origin="caffe_ocr", param_message="transpose_param", bottoms=1, tops=1)
describe("Reverse", origin="caffe_ocr", param_message="reverse_param", bottoms=1, tops=1)


def im2col_geometry(node: Node) -> ConvGeometry:
    p = node.param.convolution_param
    if p.axis != 1 or p.force_nd_im2col:
        raise ValueError("Im2col is supported with the channel axis 1 and 2 spatial axes")
    return conv_geometry(p, 2)


@register("Im2col", "shape")
def _im2col(node: Node, inputs: list[Shape]) -> LayerShapes:
    """im2col_layer.cpp: N x C*kh*kw x out_h x out_w, the convolution's output grid."""
    (shape,) = inputs
    if len(shape) != 4:
        raise ValueError(f"Im2col needs a 4-D bottom, got {list(shape)}")
    geom = im2col_geometry(node)
    out = geom.output(tuple(shape[2:]))
    if min(out) < 1:
        raise ValueError(f"the kernel does not fit the {shape[2]} x {shape[3]} input")
    columns = shape[1] * geom.kernel[0] * geom.kernel[1]
    return LayerShapes([(shape[0], columns, *out)], [])


describe("Im2col", param_message="convolution_param", bottoms=1, tops=1)


def flip_axes(node: Node) -> tuple[int, ...]:
    """The axes Flip reverses: height (2) and/or width (3)."""
    p = node.param.flip_param
    return tuple(axis for axis, on in ((2, p.flip_height), (3, p.flip_width)) if on)


@register("Flip", "shape")
def _flip(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    if len(shape) != 4:
        raise ValueError(f"Flip reads its bottom as N x C x H x W; got {list(shape)}")
    return LayerShapes([shape], [])


describe(
    "Flip",
    origin="happynear/caffe-windows (AM-Softmax's flipped test image)",
    param_message="flip_param",
    bottoms=1,
    tops=1,
)
