"""Shape rule for LRN (across or within channels): the top has the bottom's shape."""

from __future__ import annotations

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register


@register("LRN", "shape")
def _lrn(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.lrn_param
    if len(shape) != 4:
        raise ValueError(f"LRN needs a 4-D input, got {list(shape)}")
    if p.local_size % 2 == 0:
        raise ValueError(f"local_size {p.local_size} must be odd")
    return LayerShapes([shape], [])


def _lrn_k(node: Node) -> str | None:
    p = node.param.lrn_param
    if p.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS and p.k != 1.0:
        return f"OpenCV ignores LRN k (k={p.k:g})"
    return None


def lrn_scratch(node: Node, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
    """Squares, their channel-padded copy (local_size - 1 extra channels) and the window sums;
    Caffe's own padded_square blob has the same extra channels."""
    n, c, h, w = in_shapes[0]
    p = node.param.lrn_param
    if p.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
        return n * (3 * c + int(p.local_size)) * h * w
    return 2 * n * c * h * w


describe(
    "LRN",
    opencv_deviation=_lrn_k,
    opencv_tested=True,
    bottoms=1,
    tops=1,
    workspace=lrn_scratch,
)
