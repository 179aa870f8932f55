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


def window_sum(v: torch.Tensor, size: int) -> torch.Tensor:
    """Sum over the ``size`` channels centred on each channel (zero past the ends)."""
    pre = (size - 1) // 2
    padded = F.pad(v, (0, 0, 0, 0, pre, size - 1 - pre))
    channels = v.shape[1]
    total = padded.narrow(1, 0, channels).clone()
    for offset in range(1, size):
        total += padded.narrow(1, offset, channels)
    return total


class CaffeLRNAcross(torch.autograd.Function):
    """ACROSS_CHANNELS in a few passes, with Caffe's closed-form backward (lrn_layer.cpp):
    ``g * scale^-beta - 2 alpha beta / n * x * window_sum(g * y / scale)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float):
        scale = window_sum(x * x, size).mul_(alpha / size).add_(k)
        power = scale.pow(-beta)
        y = x * power
        ctx.save_for_backward(x, y, scale, power)
        ctx.size, ctx.factor = size, 2 * alpha * beta / size
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, y, scale, power = ctx.saved_tensors
        ratio = window_sum(g * y / scale, ctx.size)
        return g * power - ctx.factor * x * ratio, None, None, None, None


class CaffeLRN(nn.Module):
    """``x / (k + alpha/n * sum_window x^2)^beta`` across channels; within a channel Caffe uses
    ``x / (1 + alpha * avgpool_nxn(x^2))^beta`` (its AVE pooling, stride 1, divisor n*n)."""

    def __init__(self, param: caffe_pb2.LRNParameter, training: bool = False) -> None:
        super().__init__()
        self.size = int(param.local_size)
        self.alpha = float(param.alpha)
        self.beta = float(param.beta)
        self.k = float(param.k)
        self.across = param.norm_region == ACROSS
        self.training_form = training  # nets built for training: Caffe's backward, fewer passes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.across and self.training_form and x.dim() == 4:
            return CaffeLRNAcross.apply(x, self.size, self.alpha, self.beta, self.k)
        if self.across:
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        pad = (self.size - 1) // 2
        mean_sq = F.avg_pool2d(x * x, self.size, 1, pad, count_include_pad=True)
        return x * (1.0 + self.alpha * mean_sq).pow(-self.beta)


@register("LRN", "torch")
def _lrn(node: Node, ctx: TorchContext) -> nn.Module:
    return CaffeLRN(node.param.lrn_param, ctx.graph.training)
