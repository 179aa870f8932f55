"""InnerProduct (inner_product_layer.cpp): flatten from ``axis``, one GEMM with W (N x K, or
K x N with ``transpose``), plus the bias."""

from __future__ import annotations

import math

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.geometry import canonical_axis
from ._base import Arrays, BackwardContext, Grads, LayerContext, weight_rows


@register("InnerProduct", "reference")
def _inner_product(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.inner_product_param
    axis = canonical_axis(int(p.axis), x.ndim)
    rows = x.reshape(math.prod(x.shape[:axis]), -1)
    weight = ctx.blobs[0]  # (N, K), or (K, N) with transpose
    top = np.empty((rows.shape[0], weight.shape[1 if p.transpose else 0]))
    for outs, slab in weight_rows(weight, 1 if p.transpose else 0):
        top[:, outs] = rows @ (slab if p.transpose else slab.T)
    if p.bias_term:
        top = top + ctx.blobs[1]
    return [top.reshape(*x.shape[:axis], top.shape[1])]


@register("InnerProduct", "reference_backward")
def _inner_product_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    (x,), (g,) = inputs, top_diffs
    p = node.param.inner_product_param
    axis = canonical_axis(int(p.axis), x.ndim)
    rows = x.reshape(math.prod(x.shape[:axis]), -1)
    g = g.reshape(rows.shape[0], -1)
    weight = ctx.blobs[0]
    weight_diff = rows.T @ g if p.transpose else g.T @ rows
    params: list[np.ndarray | None] = [weight_diff]
    if p.bias_term:
        params.append(g.sum(axis=0))
    bottom = g @ (weight.T if p.transpose else weight)
    return [bottom.reshape(x.shape)], params
