"""DenseBlock (senlinuc/caffe_ocr) as one module: the fork's transitions in order, from its own
blobs (shapes/dense_block.py: blob order, the factor's two readings, the flipped 3x3 kernel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.dense_block import DENSE_BLOCK_EPS, dense_block_plan
from ._base import TorchContext, parameter


class DenseBlock(nn.Module):
    """BN (stored statistics), ReLU, [1x1 conv, BN, ReLU,] true 3x3 conv, concat; T times."""

    def __init__(self, blobs: list, transitions: int, bottleneck: bool) -> None:
        super().__init__()
        self.transitions, self.bottleneck = transitions, bottleneck
        self.blob_slots = tuple(f"blob_{i}" for i in range(len(blobs)))
        for name, blob in zip(self.blob_slots, blobs):
            self.register_parameter(name, parameter(blob))

    def _blob(self, group: int, i: int) -> torch.Tensor:
        return getattr(self, f"blob_{group * self.transitions + i}")

    def _bn(self, x: torch.Tensor, first: int, i: int, scale: torch.Tensor) -> torch.Tensor:
        scaler, bias, mean, var = (self._blob(first + k, i) for k in range(4))
        inv = (var.detach() * scale + DENSE_BLOCK_EPS).rsqrt()
        return scaler * ((x - mean.detach() * scale) * inv) + bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = getattr(self, f"blob_{len(self.blob_slots) - 1}").detach().reshape(())
        scale = torch.where(factor == 0, torch.ones_like(factor), factor).reciprocal()
        merged = x
        for i in range(self.transitions):
            y = torch.relu(self._bn(merged, 1, i, scale))
            if self.bottleneck:
                y = torch.relu(self._bn(F.conv2d(y, self._blob(5, i)), 6, i, scale))
            new = F.conv2d(y, self._blob(0, i).flip(2, 3), padding=1)
            merged = torch.cat([merged, new], dim=1)
        return merged


@register("DenseBlock", "torch")
def _dense_block(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    plan = dense_block_plan(node, ctx.in_shapes[0][1])
    return DenseBlock(list(node.blobs), plan.transitions, plan.bottleneck)
