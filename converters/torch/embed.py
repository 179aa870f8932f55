"""Embed: bottom values (integers stored as floats) pick rows of the K x N table, plus bias."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ._base import TorchContext, parameter


class Embed(nn.Module):
    def __init__(self, weight: np.ndarray, bias: np.ndarray | None) -> None:
        super().__init__()
        self.weight = parameter(weight)
        self.register_parameter("bias", None if bias is None else parameter(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.embedding(x.long(), self.weight)  # Caffe truncates each value to int
        return y if self.bias is None else y + self.bias


@register("Embed", "torch")
def _embed(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    bias = node.blobs[1] if node.param.embed_param.bias_term else None
    return Embed(node.blobs[0], bias)
