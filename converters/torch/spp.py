"""SPP in PyTorch: one Caffe pooling per level (CaffePool2d on SPPLayer's parameters for the
input's size), flattened and concatenated."""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.spp import spp_levels
from ._base import TorchContext
from .pooling import CaffePool2d


class SPP(nn.Module):
    def __init__(self, node: Node) -> None:
        super().__init__()
        self._param_bytes = node.param.spp_param.SerializeToString()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ...proto import caffe_pb2

        p = caffe_pb2.SPPParameter.FromString(self._param_bytes)
        levels = [CaffePool2d(param)(x) for param, _ in spp_levels(p, x.shape[2], x.shape[3])]
        if len(levels) == 1:
            return levels[0]
        return torch.cat([level.flatten(1) for level in levels], dim=1)


@register("SPP", "torch")
def _spp(node: Node, ctx: TorchContext) -> nn.Module:
    return SPP(node)
