"""Layers that route or reshape tensors: Split, Concat, Flatten, Softmax."""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.geometry import canonical_axis
from ._base import TorchContext


class Fanout(nn.Module):
    """Caffe's Split: the same tensor under several top names."""

    def __init__(self, copies: int) -> None:
        super().__init__()
        self.copies = copies

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.copies


class Concat(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class Flatten(nn.Module):
    def __init__(self, start: int, end: int) -> None:
        super().__init__()
        self.start, self.end = start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, self.start, self.end)


class Softmax(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.axis)


@register("Split", "torch")
def _split(node: Node, ctx: TorchContext) -> nn.Module:
    return Fanout(len(node.outputs))


@register("Concat", "torch")
def _concat(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.concat_param
    ndim = len(ctx.in_shapes[0])
    axis = int(p.concat_dim) if p.HasField("concat_dim") and not p.HasField("axis") else int(p.axis)
    return Concat(canonical_axis(axis, ndim))


@register("Flatten", "torch")
def _flatten(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.flatten_param
    ndim = len(ctx.in_shapes[0])
    return Flatten(canonical_axis(int(p.axis), ndim), canonical_axis(int(p.end_axis), ndim))


@register("Softmax", "torch")
def _softmax(node: Node, ctx: TorchContext) -> nn.Module:
    return Softmax(canonical_axis(int(node.param.softmax_param.axis), len(ctx.in_shapes[0])))
