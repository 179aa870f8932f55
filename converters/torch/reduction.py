"""ArgMax (Caffe's tie order: the later index wins) and Reduction (SUM, ASUM, SUMSQ, MEAN)."""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.geometry import canonical_axis
from ._base import TorchContext

Op = caffe_pb2.ReductionParameter


def top_k(x: torch.Tensor, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest ``k`` along ``dim``, ties ordered by the higher index first as Caffe's
    ``partial_sort`` of (value, index) pairs does: a stable sort of the reversed axis."""
    flipped = x.flip(dim)
    if k == 1:
        values, index = flipped.max(dim=dim, keepdim=True)  # first maximum of the reversal
    else:
        values, index = flipped.sort(dim=dim, descending=True, stable=True)
        values, index = values.narrow(dim, 0, k), index.narrow(dim, 0, k)
    return values, (x.shape[dim] - 1 - index).to(x.dtype)


class ArgMax(nn.Module):
    def __init__(self, axis: int | None, k: int, out_max_val: bool, out_rank: int) -> None:
        super().__init__()
        self.axis, self.k, self.out_max_val, self.out_rank = axis, k, out_max_val, out_rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is not None:
            values, index = top_k(x, self.k, self.axis)
            return values if self.out_max_val else index
        flat = x.reshape(x.shape[0], -1)  # (N, values per item); a 1-D bottom has 1 each
        values, index = top_k(flat, self.k, 1)  # (N, k)
        parts = [index, values] if self.out_max_val else [index]
        y = torch.stack(parts, dim=1)
        return y.reshape(*y.shape, *(1,) * (self.out_rank - 3))


@register("ArgMax", "torch")
def _argmax(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.argmax_param
    ndim = len(ctx.in_shapes[0])
    axis = canonical_axis(int(p.axis), ndim) if p.HasField("axis") else None
    return ArgMax(axis, int(p.top_k), bool(p.out_max_val), len(ctx.out_shapes[0]))


class Reduction(nn.Module):
    def __init__(self, axis: int, operation: int, coeff: float) -> None:
        super().__init__()
        self.axis, self.operation, self.coeff = axis, operation, coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(self.axis) if self.axis else x.reshape(-1)
        if self.operation == Op.ASUM:
            flat = flat.abs()
        elif self.operation == Op.SUMSQ:
            flat = flat * flat
        y = flat.mean(-1) if self.operation == Op.MEAN else flat.sum(-1)
        return y * self.coeff if self.coeff != 1 else y


@register("Reduction", "torch")
def _reduction(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.reduction_param
    axis = canonical_axis(int(p.axis), len(ctx.in_shapes[0]))
    return Reduction(axis, int(p.operation), float(p.coeff))
