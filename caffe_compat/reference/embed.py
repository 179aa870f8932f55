"""Embed (embed_layer.cpp): each bottom value, cast to int as C++ does, picks a row of the
K x N table; the top appends the N axis. An index outside [0, K) is an error (Caffe would
read out of bounds). Backward adds each top row's diff into the row it came from; the indices
get no diff (their facts refuse it)."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ._base import Arrays, BackwardContext, Grads, LayerContext


@register("Embed", "reference")
def _embed(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    table = ctx.blobs[0]
    index = np.trunc(x)  # static_cast<int>: toward zero
    bad = ~((index >= 0) & (index < table.shape[0]))
    if bad.any():
        value = x[bad].reshape(-1)[0]
        raise ValueError(f"index {value:g} is outside the {table.shape[0]} rows of the table")
    top = table[index.astype(np.int64)]
    if node.param.embed_param.bias_term:
        top = top + ctx.blobs[1]
    return [top]


@register("Embed", "reference_backward")
def _embed_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    (x,), (g,) = inputs, top_diffs
    table = ctx.blobs[0]
    rows = g.reshape(-1, table.shape[1])
    weight_diff = np.zeros(table.shape)
    np.add.at(weight_diff, np.trunc(x).astype(np.int64).reshape(-1), rows)
    params: list[np.ndarray | None] = [weight_diff]
    if node.param.embed_param.bias_term:
        params.append(rows.sum(axis=0).reshape(ctx.blobs[1].shape))
    return [None], params
