"""Shape rules for the layers that reduce an axis: ArgMax and Reduction."""

from __future__ import annotations

import math

from ..ir.graph import Node, Shape
from ..registry import LayerShapes, describe, register
from .geometry import canonical_axis


@register("ArgMax", "shape")
def _argmax(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    if not shape:
        raise ValueError("ArgMax needs a bottom with at least one axis (the batch)")
    p = node.param.argmax_param
    k = int(p.top_k)
    if k < 1:
        raise ValueError("top_k must be at least 1")
    if p.HasField("axis"):
        axis = canonical_axis(int(p.axis), len(shape))
        if k > shape[axis]:
            raise ValueError(f"top_k {k} exceeds axis {axis} of size {shape[axis]}")
        return LayerShapes([(*shape[:axis], k, *shape[axis + 1 :])], [])
    if k > math.prod(shape[1:]):
        raise ValueError(f"top_k {k} exceeds the {math.prod(shape[1:])} values per item")
    # Without an axis Caffe writes (N, 1 or 2, top_k), padded with 1s to the bottom's rank.
    top = [shape[0], 2 if p.out_max_val else 1, k] + [1] * (len(shape) - 3)
    return LayerShapes([tuple(top)], [])


@register("Reduction", "shape")
def _reduction(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    axis = canonical_axis(int(node.param.reduction_param.axis), len(shape))
    return LayerShapes([tuple(shape[:axis])], [])  # every axis from ``axis`` on is reduced


def _argmax_has_no_backward(node: Node, bottom: int) -> str | None:
    return "ArgMax has no backward (Caffe: Not Implemented Yet)"


def _class_top(node: Node) -> int | None:
    """ArgMax's top holds the index of each maximum (top_k 1, no values written): along
    ``axis``, or over every axis but the batch (-1)."""
    p = node.param.argmax_param
    if int(p.top_k) != 1 or p.out_max_val:
        return None
    return int(p.axis) if p.HasField("axis") else -1


describe(
    "ArgMax",
    bottoms=1,
    tops=1,
    no_backward=_argmax_has_no_backward,
    class_top=_class_top,
)
describe("Reduction", bottoms=1, tops=1)
