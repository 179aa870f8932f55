"""Softmax (softmax_layer.cpp) over any axis: subtract the maximum along it, exponentiate,
divide by the sum. Backward: ``y * (g - sum(g * y))`` along the axis."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.geometry import canonical_axis
from ._base import Arrays, BackwardContext, Grads, LayerContext


@register("Softmax", "reference")
def _softmax(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    axis = canonical_axis(int(node.param.softmax_param.axis), x.ndim)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


@register("Softmax", "reference_backward")
def _softmax_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    (y,), (g,) = ctx.outputs, top_diffs
    axis = canonical_axis(int(node.param.softmax_param.axis), y.ndim)
    return [y * (g - (g * y).sum(axis=axis, keepdims=True))], []
