"""Softmax over any axis."""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.geometry import canonical_axis
from ._base import TorchContext


class Softmax(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.axis)


@register("Softmax", "torch")
def _softmax(node: Node, ctx: TorchContext) -> nn.Module:
    return Softmax(canonical_axis(int(node.param.softmax_param.axis), len(ctx.in_shapes[0])))
