"""ArgMax (argmax_layer.cpp) and Reduction (reduction_layer.cpp).

ArgMax ranks (value, index) pairs with ``std::greater``, so among equal values the higher index
comes first. Without ``axis`` it ranks all values of each item and writes (N, 1 or 2, top_k):
indices, then values with ``out_max_val``; with ``axis`` it writes either the indices or the
values along that axis. Reduction reduces every axis from ``axis`` on, then multiplies by coeff;
its backward spreads each diff back (times the sign for ASUM, 2x for SUMSQ, 1 / count for MEAN).
ArgMax has no backward in Caffe.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import register
from ..shapes.geometry import canonical_axis
from ._base import Arrays, BackwardContext, Grads, LayerContext

Op = caffe_pb2.ReductionParameter


def top_k(x: np.ndarray, k: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest along ``axis`` in Caffe's order (ties: higher index first)."""
    flipped = np.flip(x, axis=axis)
    order = np.argsort(-flipped, axis=axis, kind="stable")  # ties keep the reversed order
    order = np.take(order, np.arange(k), axis=axis)
    values = np.take_along_axis(flipped, order, axis=axis)
    return values, (x.shape[axis] - 1 - order).astype(np.float64)


@register("ArgMax", "reference")
def _argmax(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.argmax_param
    k = int(p.top_k)
    if p.HasField("axis"):
        values, index = top_k(x, k, canonical_axis(int(p.axis), x.ndim))
        return [values if p.out_max_val else index]
    values, index = top_k(x.reshape(x.shape[0], -1), k, 1)
    top = np.stack([index, values] if p.out_max_val else [index], axis=1)
    return [top.reshape(ctx.out_shapes[0])]


@register("Reduction", "reference")
def _reduction(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.reduction_param
    axis = canonical_axis(int(p.axis), x.ndim)
    rows = x.reshape(*x.shape[:axis], -1)
    if p.operation == Op.ASUM:
        rows = np.abs(rows)
    elif p.operation == Op.SUMSQ:
        rows = np.square(rows)
    top = rows.mean(axis=-1) if p.operation == Op.MEAN else rows.sum(axis=-1)
    return [top * float(p.coeff)]


@register("Reduction", "reference_backward")
def _reduction_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    (x,), (g,) = inputs, top_diffs
    p = node.param.reduction_param
    axis = canonical_axis(int(p.axis), x.ndim)
    rows = x.reshape(*x.shape[:axis], -1)
    spread = np.broadcast_to((g * float(p.coeff))[..., None], rows.shape)
    if p.operation == Op.ASUM:
        spread = spread * np.sign(rows)
    elif p.operation == Op.SUMSQ:
        spread = spread * 2 * rows
    elif p.operation == Op.MEAN:
        spread = spread / rows.shape[-1]
    return [np.array(spread).reshape(x.shape)], []
