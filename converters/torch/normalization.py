"""BatchNorm (stored or batch statistics) and MVN, with Caffe's arithmetic order."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.normalization import stored_statistics, uses_global_stats
from ._base import TorchContext, buffer


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


@register("BatchNorm", "torch")
def _batch_norm(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    ndim = len(ctx.in_shapes[0])
    axes = tuple(i for i in range(ndim) if i != 1) if ndim > 1 else (0,)
    eps = float(node.param.batch_norm_param.eps)
    if uses_global_stats(node):
        mean, std = stored_statistics(node)
        return Standardize(axes, eps, mean, std)
    return Standardize(axes, eps)


class MVN(nn.Module):
    """Mean (and, with ``variance``, deviation) normalisation of Caffe's 4-D view of ``x``."""

    def __init__(
        self, shape: tuple[int, ...], axes: tuple[int, ...], eps: float, variance: bool
    ) -> None:
        super().__init__()
        self.shape = shape[1:]  # the 4-D view Caffe uses; the batch stays dynamic
        self.variance = variance
        self.norm = Standardize(axes, eps, std_eps=True)
        self.axes = axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, *self.shape)
        if self.variance:
            return self.norm(x)
        return x - x.mean(dim=self.axes, keepdim=True)


@register("MVN", "torch")
def _mvn(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.mvn_param
    axes = (1, 2, 3) if p.across_channels else (2, 3)
    return MVN(ctx.out_shapes[0], axes, float(p.eps), bool(p.normalize_variance))
