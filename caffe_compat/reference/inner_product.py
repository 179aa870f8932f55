"""InnerProduct (inner_product_layer.cpp): flatten from ``axis``, one GEMM with W (N x K, or
K x N with ``transpose``), plus the bias."""

from __future__ import annotations

import math

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.geometry import canonical_axis
from ._base import LayerContext

Arrays = list[np.ndarray]


@register("InnerProduct", "reference")
def _inner_product(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.inner_product_param
    axis = canonical_axis(int(p.axis), x.ndim)
    rows = x.reshape(math.prod(x.shape[:axis]), -1)
    weight = ctx.blobs[0]
    top = rows @ (weight if p.transpose else weight.T)
    if p.bias_term:
        top = top + ctx.blobs[1]
    return [top.reshape(*x.shape[:axis], top.shape[1])]
