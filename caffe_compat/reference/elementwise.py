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
from ._base import Arrays, BackwardContext, Grads, LayerContext, broadcastable

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


# --- backward --------------------------------------------------------------------------------


def _max_index(inputs: Arrays) -> np.ndarray:
    """Caffe's mask: which bottom each maximum came from (ties: bottom 1 over bottom 0, then
    the earlier bottom)."""
    index = np.where(inputs[0] > inputs[1], 0, 1)
    top = np.where(index == 0, inputs[0], inputs[1])
    for i, x in enumerate(inputs[2:], start=2):
        better = x > top
        index = np.where(better, i, index)
        top = np.where(better, x, top)
    return index


@register("Eltwise", "reference_backward")
def _eltwise_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    p = node.param.eltwise_param
    (g,) = top_diffs
    grads: list[np.ndarray | None] = []
    if p.operation == Op.MAX:
        index = _max_index(inputs)
        return [g * (index == i) for i in range(len(inputs))], []
    coeffs = [float(c) for c in p.coeff] or [1.0] * len(inputs)
    for i, x in enumerate(inputs):
        if p.operation == Op.SUM:
            grads.append(g * coeffs[i])
        elif p.stable_prod_grad:
            others = np.ones(x.shape)
            for j, other in enumerate(inputs):
                if j != i:
                    others = others * other
            grads.append(g * others)
        else:
            grads.append(g * ctx.outputs[0] / x)
    return grads, []


def _reduce_to(diff: np.ndarray, operand: np.ndarray, axis: int) -> np.ndarray:
    """Sum ``diff`` over the axes an operand of this shape broadcasts across."""
    start = operand_axis(diff.shape, operand.shape, axis)
    outer = tuple(range(start))
    inner = tuple(range(start + operand.ndim, diff.ndim))
    return diff.sum(axis=outer + inner).reshape(operand.shape)


@register("Scale", "reference_backward")
def _scale_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    p = node.param.scale_param
    x, (g,) = inputs[0], top_diffs
    learned = len(inputs) == 1
    scale = ctx.blobs[0] if learned else inputs[1]
    axis = int(p.axis)
    scale_diff = _reduce_to(g * x, scale, axis)
    grads: list[np.ndarray | None] = [g * _apply(x, scale, axis)]
    params: list[np.ndarray | None] = []
    if learned:
        params.append(scale_diff)
    else:
        grads.append(scale_diff)
    if p.bias_term:
        params.append(_reduce_to(g, ctx.blobs[-1], axis))
    return grads, params


@register("Bias", "reference_backward")
def _bias_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    (g,) = top_diffs
    axis = int(node.param.bias_param.axis)
    if len(inputs) == 1:
        return [g], [_reduce_to(g, ctx.blobs[0], axis)]
    return [g, _reduce_to(g, inputs[1], axis)], []


def _axpy_scale(a: np.ndarray, ndim: int) -> np.ndarray:
    return a.reshape(a.shape[:2] + (1,) * (ndim - 2))


@register("Axpy", "reference")
def _axpy(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    """SENet's axpy_layer.cpp: top = y, then caffe_axpy(a[n, c], x[n, c]) per plane."""
    a, x, y = inputs
    return [_axpy_scale(a, x.ndim) * x + y]


@register("Axpy", "reference_backward")
def _axpy_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    """a: the plane sums of top_diff * x; x: a * top_diff; y: top_diff."""
    a, x, _ = inputs
    (g,) = top_diffs
    da = (g * x).reshape(*x.shape[:2], -1).sum(axis=2).reshape(a.shape)
    return [da, _axpy_scale(a, x.ndim) * g, g], []
