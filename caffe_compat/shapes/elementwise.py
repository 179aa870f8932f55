"""Shape rules for Scale, Bias and Eltwise: arithmetic between a blob and an operand.

Scale and Bias take their operand from a learned blob (one bottom) or from ``bottom[1]``; it
covers ``num_axes`` axes of ``bottom[0]`` from ``axis`` and broadcasts over the rest.
"""

from __future__ import annotations

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from ._synthesis import normal, positive
from .geometry import canonical_axis


def operand_axis(shape: Shape, operand: Shape, axis: int) -> int:
    """Where the operand starts in ``shape`` (Caffe uses axis 0 for a scalar operand)."""
    start = 0 if not operand else canonical_axis(axis, len(shape))
    if tuple(shape[start : start + len(operand)]) != tuple(operand):
        raise ValueError(f"operand {list(operand)} does not match {list(shape)} from axis {start}")
    return start


def learned_operand(shape: Shape, axis: int, num_axes: int) -> Shape:
    """The learned blob's shape: ``num_axes`` axes of the bottom from ``axis`` (-1: to the end)."""
    start = canonical_axis(axis, len(shape))
    if num_axes < -1:
        raise ValueError(f"num_axes {num_axes} must be -1 or more")
    if num_axes >= 0 and start + num_axes > len(shape):
        raise ValueError(f"axis {axis} + num_axes {num_axes} run past a {len(shape)}-D bottom")
    return tuple(shape[start:] if num_axes == -1 else shape[start : start + num_axes])


def _operand_layer(node: Node, inputs: list[Shape], p, extra_blob: bool) -> LayerShapes:
    shape = inputs[0]
    if len(inputs) > 2:
        raise ValueError(f"takes one or two bottoms, got {len(inputs)}")
    own = len(inputs) == 1
    operand = learned_operand(shape, int(p.axis), int(p.num_axes)) if own else inputs[1]
    operand_axis(shape, operand, int(p.axis))
    params = ([operand] if own else []) + ([operand] if extra_blob else [])
    return LayerShapes([shape], params)


@register("Scale", "shape")
def _scale(node: Node, inputs: list[Shape]) -> LayerShapes:
    p = node.param.scale_param
    return _operand_layer(node, inputs, p, bool(p.bias_term))


@register("Bias", "shape")
def _bias(node: Node, inputs: list[Shape]) -> LayerShapes:
    return _operand_layer(node, inputs, node.param.bias_param, False)


@register("Eltwise", "shape")
def _eltwise(node: Node, inputs: list[Shape]) -> LayerShapes:
    p = node.param.eltwise_param
    if len(inputs) < 2:
        raise ValueError("Eltwise needs at least two bottoms")
    if any(s != inputs[0] for s in inputs[1:]):
        raise ValueError(f"bottom shapes differ: {[list(s) for s in inputs]}")
    if p.coeff and len(p.coeff) != len(inputs):
        raise ValueError(f"{len(p.coeff)} coefficients for {len(inputs)} bottoms")
    if p.coeff and p.operation != caffe_pb2.EltwiseParameter.SUM:
        raise ValueError("coefficients apply to SUM only")
    return LayerShapes([inputs[0]], [])


def _scale_fillers(node: Node) -> list:
    c = node.param.scale_param
    if not c.HasField("filler"):  # Caffe's default: a constant 1
        c.filler.type, c.filler.value = "constant", 1.0
    return [c.filler, c.bias_filler] if c.bias_term else [c.filler]


def _two_bottom_scale_bias(node: Node) -> str | None:
    if len(node.inputs) > 1 and node.param.scale_param.bias_term:
        return "OpenCV's two-bottom Scale with bias_term gives other values"
    return None


describe(
    "Scale",
    starting_values=positive(0.7, 1.3),
    fillers=_scale_fillers,
    opencv_deviation=_two_bottom_scale_bias,
    opencv_tested=True,
    bottoms=(1, 2),
    tops=1,
)


def _bias_fillers(node: Node) -> list:
    return [node.param.bias_param.filler]  # unset: Caffe's constant 0


describe("Bias", starting_values=normal(0.2), fillers=_bias_fillers, bottoms=(1, 2), tops=1)
describe("Eltwise", opencv_tested=True, bottoms=(2, None), tops=1)
