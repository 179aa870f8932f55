"""InnerProduct: flatten from ``axis``, multiply by W (N x K, or K x N with ``transpose``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.geometry import canonical_axis
from ._base import TorchContext, parameter


class CaffeInnerProduct(nn.Module):
    def __init__(self, axis: int, weight: torch.nn.Parameter, bias: torch.nn.Parameter | None):
        super().__init__()
        self.axis = axis
        self.weight = weight
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.flatten(x, self.axis), self.weight, self.bias)


@register("InnerProduct", "torch")
def _inner_product(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    p = node.param.inner_product_param
    axis = canonical_axis(int(p.axis), len(ctx.in_shapes[0]))
    weight = node.blobs[0].T if p.transpose else node.blobs[0]
    bias = parameter(node.blobs[1]) if p.bias_term else None
    return CaffeInnerProduct(axis, parameter(weight), bias)
