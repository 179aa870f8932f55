"""Shape rules for layers whose top has the shape of their bottom and which hold no weights."""

from __future__ import annotations

from ..ir.graph import Node, Shape
from ..registry import LayerShapes, register
from .geometry import canonical_axis

SAME_SHAPE_TYPES = (
    "ReLU",
    "Sigmoid",
    "TanH",
    "AbsVal",
    "BNLL",
    "Power",
    "Exp",
    "Log",
    "ELU",
    "Dropout",
    "Threshold",
    "Clip",
    "Swish",
)


@register(SAME_SHAPE_TYPES, "shape")
def _same_shape(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    return LayerShapes([shape], [])


@register("Softmax", "shape")
def _softmax(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    canonical_axis(int(node.param.softmax_param.axis), len(shape))
    return LayerShapes([shape], [])
