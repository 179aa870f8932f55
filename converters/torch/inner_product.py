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
    """``weight`` is Caffe's blob: N x K, or K x N with ``transpose``."""

    def __init__(
        self,
        axis: int,
        weight: torch.nn.Parameter,
        bias: torch.nn.Parameter | None,
        transpose: bool = False,
    ):
        super().__init__()
        self.axis = axis
        self.weight = weight
        self.bias = bias
        self.transpose = transpose
        self.blob_slots = ("weight", "bias") if bias is not None else ("weight",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.t() if self.transpose else self.weight
        return F.linear(torch.flatten(x, self.axis), weight, self.bias)


@register("InnerProduct", "torch")
def _inner_product(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    p = node.param.inner_product_param
    axis = canonical_axis(int(p.axis), len(ctx.in_shapes[0]))
    bias = parameter(node.blobs[1]) if p.bias_term else None
    return CaffeInnerProduct(axis, parameter(node.blobs[0]), bias, bool(p.transpose))
