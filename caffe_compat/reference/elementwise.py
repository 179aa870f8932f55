"""Eltwise, Scale and Bias (eltwise_layer.cpp, scale_layer.cpp, bias_layer.cpp).

Eltwise MAX keeps Caffe's comparisons: bottom 0 wins over bottom 1 only when strictly greater,
and each later bottom only when strictly greater than the running maximum. Scale and Bias take
their operand from a learned blob (one bottom) or from bottom 1; it lines up with ``axis`` of
bottom 0 (axis 0 for a scalar operand) and broadcasts over the other axes. Scale's bias has the
operand's shape.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import register
from ..shapes.elementwise import operand_axis
from ._base import LayerContext, broadcastable

Arrays = list[np.ndarray]
Op = caffe_pb2.EltwiseParameter


@register("Eltwise", "reference")
def _eltwise(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    p = node.param.eltwise_param
    if p.operation == Op.PROD:
        top = inputs[0] * inputs[1]
        for x in inputs[2:]:
            top = top * x
    elif p.operation == Op.SUM:
        coeffs = [float(c) for c in p.coeff] or [1.0] * len(inputs)
        top = np.zeros(inputs[0].shape)
        for coeff, x in zip(coeffs, inputs):
            top = top + coeff * x
    else:
        top = np.where(inputs[0] > inputs[1], inputs[0], inputs[1])
        for x in inputs[2:]:
            top = np.where(x > top, x, top)
    return [top]


def _apply(x: np.ndarray, operand: np.ndarray, axis: int) -> np.ndarray:
    return broadcastable(operand, x.ndim, operand_axis(x.shape, operand.shape, axis))


@register("Scale", "reference")
def _scale(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    p = node.param.scale_param
    x = inputs[0]
    learned = len(inputs) == 1
    scale = ctx.blobs[0] if learned else inputs[1]
    top = x * _apply(x, scale, int(p.axis))
    if p.bias_term:
        bias = ctx.blobs[1] if learned else ctx.blobs[0]
        top = top + _apply(x, bias, int(p.axis))
    return [top]


@register("Bias", "reference")
def _bias(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    x = inputs[0]
    bias = ctx.blobs[0] if len(inputs) == 1 else inputs[1]
    return [x + _apply(x, bias, int(node.param.bias_param.axis))]
