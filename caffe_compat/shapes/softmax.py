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


def _over_the_batch(node: Node, shape: Shape) -> bool:
    return canonical_axis(int(node.param.softmax_param.axis), len(shape)) == 0


describe(
    "Softmax",
    param_message="softmax_param",
    mixes_batch=_over_the_batch,
    opencv_tested=True,
    bottoms=1,
    tops=1,
)
