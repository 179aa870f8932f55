"""Shape rules for Scale, Bias and Eltwise: arithmetic between a blob and an operand.

Scale and Bias take their operand from a learned blob (one bottom) or from ``bottom[1]``; it
covers ``num_axes`` axes of ``bottom[0]`` from ``axis`` and broadcasts over the rest.
"""

from __future__ import annotations

import numpy as np

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


def _scale_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    """ScaleLayer: the scale blob (one bottom only) from ``filler``, a constant 1 when none is
    given; then the bias blob from ``bias_filler`` when ``bias_term``."""
    c = layer.scale_param
    unit = caffe_pb2.FillerParameter(type="constant", value=1.0)
    own = [c.filler if c.HasField("filler") else unit] if len(layer.bottom) < 2 else []
    return own + ([c.bias_filler] if c.bias_term else [])


def _bias_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    """BiasLayer: its blob (one bottom only) from ``filler``."""
    return [layer.bias_param.filler] if len(layer.bottom) < 2 else []


def _per_channel(node: Node, settings, shape: Shape) -> str | None:
    """Why a Scale/Bias operand is not one learned value per channel on axis 1."""
    if len(node.inputs) != 1 or not node.blobs:
        return "takes its operand from a second bottom"
    if len(shape) < 2 or tuple(node.blobs[0].shape) != (shape[1],):
        return f"its operand {list(node.blobs[0].shape)} is not one value per channel"
    if canonical_axis(int(settings.axis), len(shape)) != 1:
        return "its operand is not on axis 1"
    return None


def _scale_affine(node: Node, shape: Shape) -> tuple[np.ndarray, np.ndarray] | str:
    p = node.param.scale_param
    why = _per_channel(node, p, shape)
    if why:
        return why
    a = node.blobs[0].astype(np.float64)
    return a, node.blobs[1].astype(np.float64) if p.bias_term else np.zeros_like(a)


def _bias_affine(node: Node, shape: Shape) -> tuple[np.ndarray, np.ndarray] | str:
    why = _per_channel(node, node.param.bias_param, shape)
    if why:
        return why
    c = node.blobs[0].astype(np.float64)
    return np.ones_like(c), c


def _two_bottom_scale_bias(node: Node) -> str | None:
    if len(node.inputs) > 1 and node.param.scale_param.bias_term:
        return "OpenCV's two-bottom Scale with bias_term gives other values"
    return None


def _largest(value: np.ndarray | None) -> float | None:
    if value is None:
        return None
    return float(np.max(np.abs(value))) if np.size(value) else 0.0


def _product_error_gain(node: Node, value) -> dict[int, float]:
    """A product of bottoms (Scale by a bottom: x * s): an error in one factor moves the top by
    it times the other factor's largest value, and the two terms add (verify/compare.py
    ``error_scales``); a Scale with its own blob is affine, judged by its blob instead. A
    factor whose magnitude is unknown: no gain declared (the bottoms' largest, as before)."""
    if len(node.inputs) != 2:
        return {}
    x, s = (_largest(value(name)) for name in node.inputs)
    return {} if x is None or s is None else {0: s, 1: x}


describe(
    "Scale",
    param_message="scale_param",
    bias_term="bias_term",
    starting_values=positive(0.7, 1.3),
    fillers=_scale_fillers,
    affine=_scale_affine,
    opencv_deviation=_two_bottom_scale_bias,
    error_gain=_product_error_gain,
    opencv_tested=True,
    bottoms=(1, 2),
    tops=1,
)
describe(
    "Bias",
    param_message="bias_param",
    starting_values=normal(0.2),
    fillers=_bias_fillers,
    affine=_bias_affine,
    bottoms=(1, 2),
    tops=1,
)
describe("Eltwise", param_message="eltwise_param", opencv_tested=True, bottoms=(2, None), tops=1)


@register("Axpy", "shape")
def _axpy(node: Node, inputs: list[Shape]) -> LayerShapes:
    """SENet's axpy_layer.cpp: top = a * x + y with one ``a`` per (item, channel)."""
    a, x, y = inputs
    if len(x) < 2 or a[:2] != x[:2]:
        raise ValueError(f"the scale bottom {list(a)} must start with x's N and C ({list(x)})")
    if len(a) == 4 and a[2:] != (1, 1):
        raise ValueError(f"a 4-D scale bottom must be N x C x 1 x 1, got {list(a)}")
    if tuple(x) != tuple(y):
        raise ValueError(f"x {list(x)} and y {list(y)} must have one shape")
    return LayerShapes([x], [])


def _axpy_error_gain(node: Node, value) -> dict[int, float]:
    """a * x + y: a's error times max |x| plus x's times max |a| (the product's terms add);
    y, the residual stream, passes as it is (the largest, as an Eltwise SUM's bottoms do)."""
    a, x = (_largest(value(name)) for name in node.inputs[:2])
    return {} if a is None or x is None else {0: x, 1: a}


def _axpy_in_opencv(node: Node) -> str:
    """OpenCV 4 (measured on 4.14) reads an Axpy layer but computes a * bottom[2] + bottom[1]:
    SENet's axpy_layer.cpp copies bottom[2] into the top and adds a * bottom[1] to it."""
    return "OpenCV's Axpy computes a * y + x, not SENet's a * x + y"


describe(
    "Axpy",
    origin="SENet, SE-ResNeXt (hujie-frank/SENet)",
    error_gain=_axpy_error_gain,
    opencv_deviation=_axpy_in_opencv,
    bottoms=3,
    tops=1,
)
