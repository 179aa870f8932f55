"""BatchNorm (stored or batch statistics) and MVN, with Caffe's arithmetic order.

In a net built for training, BatchNorm holds its three blobs themselves: a TRAIN forward on
batch statistics updates Caffe's running sums in place (batch_norm_layer.cpp), and a net sharing
the blobs (the test net) reads them as they are now. MVN's backward there is Caffe's, which puts
``std + eps`` where the derivative has ``std`` in one term (mvn_layer.cpp).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.normalization import (
    SEGNET_BN_EPS,
    bn_stored,
    pspnet_bn,
    stored_statistics,
    uses_global_stats,
)
from ._base import TorchContext, buffer, parameter


class Standardize(nn.Module):
    """``(x - mean) / std`` over ``axes``; constant statistics, or the input's own (biased)."""

    def __init__(
        self,
        axes: tuple[int, ...],
        eps: float,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        std_eps: bool = False,
    ) -> None:
        super().__init__()
        self.axes, self.eps, self.std_eps = axes, eps, std_eps
        # Registered buffers (like torch's running statistics) follow the module's device.
        self.register_buffer("mean", None if mean is None else buffer(mean))
        self.register_buffer("std", None if std is None else buffer(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            shape = (-1,) + (1,) * (x.dim() - 2) if x.dim() > 1 else (-1,)
            return (x - self.mean.view(shape)) / self.std.view(shape)
        centred = x - x.mean(dim=self.axes, keepdim=True)
        var = (centred * centred).mean(dim=self.axes, keepdim=True)
        # BatchNorm divides by sqrt(var + eps); MVN by sqrt(var) + eps.
        std = var.sqrt() + self.eps if self.std_eps else (var + self.eps).sqrt()
        return centred / std


class CaffeBatchNorm(nn.Module):
    """BatchNorm over Caffe's blobs (mean * f, variance * f, f), for training graphs."""

    blob_slots = ("mean", "variance", "factor")

    def __init__(self, blobs: list[np.ndarray], eps: float, fraction: float, stored: bool):
        super().__init__()
        for name, blob in zip(self.blob_slots, blobs):
            self.register_buffer(name, buffer(blob))
        self.eps, self.fraction, self.stored = eps, fraction, stored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = 1 if x.dim() == 1 else x.shape[1]
        view = x.reshape(x.shape[0], channels, -1)
        if self.stored:
            f = self.factor.reshape(-1)[0]
            scale = torch.where(f == 0, torch.zeros_like(f), 1 / f)
            mean, var = self.mean * scale, self.variance * scale
        else:
            mean = view.mean(dim=(0, 2))
            var = (view - mean[None, :, None]).square().mean(dim=(0, 2))
            self._accumulate(mean.detach(), var.detach(), x.numel() // channels)
        std = (var + self.eps).sqrt()
        return ((view - mean[None, :, None]) / std[None, :, None]).reshape(x.shape)

    @torch.no_grad()
    def _accumulate(self, mean: torch.Tensor, var: torch.Tensor, m: int) -> None:
        """Caffe's running sums: f = maf * f + 1, mean = batch mean + maf * mean, var = m /
        (m - 1) * batch variance + maf * var (biased variance in the normalisation)."""
        correction = m / (m - 1) if m > 1 else 1.0
        self.factor.mul_(self.fraction).add_(1)
        self.mean.mul_(self.fraction).add_(mean.reshape(self.mean.shape))
        self.variance.mul_(self.fraction).add_(correction * var.reshape(self.variance.shape))


@register("BatchNorm", "torch")
def _batch_norm(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    ndim = len(ctx.in_shapes[0])
    axes = tuple(i for i in range(ndim) if i != 1) if ndim > 1 else (0,)
    p = node.param.batch_norm_param
    eps = float(p.eps)
    if ctx.graph.training:
        fraction = float(np.float32(p.moving_average_fraction))
        return CaffeBatchNorm(list(node.blobs), eps, fraction, uses_global_stats(node))
    if uses_global_stats(node):
        mean, std = stored_statistics(node)
        return Standardize(axes, eps, mean, std)
    return Standardize(axes, eps)


class CaffeMVNGrad(torch.autograd.Function):
    """Variance normalisation with Caffe's backward: ``(g - mean(g) - y * mean(g * y)) /
    (std + eps)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, axes: tuple[int, ...], eps: float) -> torch.Tensor:
        centred = x - x.mean(dim=axes, keepdim=True)
        std = (centred * centred).mean(dim=axes, keepdim=True).sqrt() + eps
        y = centred / std
        ctx.save_for_backward(y, std)
        ctx.axes = axes
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        y, std = ctx.saved_tensors
        axes = ctx.axes
        spread = g.mean(dim=axes, keepdim=True) + y * (g * y).mean(dim=axes, keepdim=True)
        return (g - spread) / std, None, None


class MVN(nn.Module):
    """Mean (and, with ``variance``, deviation) normalisation of Caffe's 4-D view of ``x``."""

    def __init__(
        self,
        shape: tuple[int, ...],
        axes: tuple[int, ...],
        eps: float,
        variance: bool,
        caffe_backward: bool = False,
    ) -> None:
        super().__init__()
        self.shape = shape[1:]  # the 4-D view Caffe uses; the batch stays dynamic
        self.variance = variance
        self.norm = Standardize(axes, eps, std_eps=True)
        self.axes = axes
        self.eps = eps
        self.caffe_backward = caffe_backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, *self.shape)
        if self.variance and self.caffe_backward:
            return CaffeMVNGrad.apply(x, self.axes, self.eps)
        if self.variance:
            return self.norm(x)
        return x - x.mean(dim=self.axes, keepdim=True)


@register("MVN", "torch")
def _mvn(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.mvn_param
    axes = (1, 2, 3) if p.across_channels else (2, 3)
    variance = bool(p.normalize_variance)
    return MVN(ctx.out_shapes[0], axes, float(p.eps), variance, ctx.graph.training)


class ForkBN(nn.Module):
    """The forks' BN (shapes/normalization.py): caffe-segnet's ``scale * x + shift`` or its
    LEARN mode, yjxiong's ``slope * (x - mean) * (var + eps)^-1/2 + bias`` (stored or batch)."""

    def __init__(self, blobs: list[np.ndarray], pspnet: bool, stored: bool, eps: float) -> None:
        super().__init__()
        self.scale, self.shift = parameter(blobs[0]), parameter(blobs[1])
        self.pspnet, self.stored, self.eps = pspnet, stored, eps
        self.register_buffer("mean", buffer(blobs[2]) if pspnet else None)
        self.register_buffer("var", buffer(blobs[3]) if pspnet else None)
        # Caffe blob order; yjxiong's mean and variance get no diff (its backward leaves them).
        self.blob_slots = ("scale", "shift", "mean", "var")[: 4 if pspnet else 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pspnet and self.stored:
            return x * self.scale + self.shift
        if self.pspnet and self.stored:
            mean, var = self.mean.detach(), self.var.detach()
        else:
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            if self.pspnet:
                var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
            else:  # caffe-segnet: E(x^2) - E(x)^2
                var = x.square().mean(dim=(0, 2, 3), keepdim=True) - mean.square()
        return (x - mean) * (var + self.eps).rsqrt() * self.scale + self.shift


@register("BN", "torch")
def _bn(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    p = node.param.bn_param
    pspnet = pspnet_bn(p)
    eps = float(np.float32(p.eps)) if pspnet else SEGNET_BN_EPS
    return ForkBN(node.blobs, pspnet, bn_stored(node), eps)
