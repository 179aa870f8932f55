"""Local response normalisation, across channels (with ``k``) and within a channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ir.graph import Node
from ...proto import caffe_pb2
from ...registry import register
from ._base import TorchContext

ACROSS = caffe_pb2.LRNParameter.ACROSS_CHANNELS


class CaffeLRN(nn.Module):
    """``x / (k + alpha/n * sum_window x^2)^beta`` across channels; within a channel Caffe uses
    ``x / (1 + alpha * avgpool_nxn(x^2))^beta`` (its AVE pooling, stride 1, divisor n*n)."""

    def __init__(self, param: caffe_pb2.LRNParameter) -> None:
        super().__init__()
        self.size = int(param.local_size)
        self.alpha = float(param.alpha)
        self.beta = float(param.beta)
        self.k = float(param.k)
        self.across = param.norm_region == ACROSS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.across:
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        pad = (self.size - 1) // 2
        mean_sq = F.avg_pool2d(x * x, self.size, 1, pad, count_include_pad=True)
        return x * (1.0 + self.alpha * mean_sq).pow(-self.beta)


@register("LRN", "torch")
def _lrn(node: Node, ctx: TorchContext) -> nn.Module:
    return CaffeLRN(node.param.lrn_param)
