"""Shape rule for Softmax over any axis."""

from __future__ import annotations

from ..ir.graph import Node, Shape
from ..registry import LayerShapes, describe, register
from .geometry import canonical_axis


@register("Softmax", "shape")
def _softmax(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    canonical_axis(int(node.param.softmax_param.axis), len(shape))
    return LayerShapes([shape], [])


describe("Softmax", opencv_tested=True, bottoms=1, tops=1)
