"""Weight-free elementwise layers: ReLU, Dropout (inference), and their simple kin."""

from __future__ import annotations

from torch import nn

from ...ir.graph import Node
from ...registry import register
from ._base import TorchContext


@register("ReLU", "torch")
def _relu(node: Node, ctx: TorchContext) -> nn.Module:
    slope = float(node.param.relu_param.negative_slope)
    return nn.LeakyReLU(slope) if slope else nn.ReLU()


@register("Dropout", "torch")
def _dropout(node: Node, ctx: TorchContext) -> nn.Module:
    # Caffe scales by 1/(1-ratio) while training, so inference is the identity.
    return nn.Identity()
