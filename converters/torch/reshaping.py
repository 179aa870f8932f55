"""Slice, Reshape, Crop and Tile. Sizes follow the input at run time, so the batch may change."""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.geometry import canonical_axis
from ...shapes.reshaping import crop_offsets, reshape_span, slice_sizes
from ._base import TorchContext


class Slice(nn.Module):
    def __init__(self, axis: int, points: list[int] | None, parts: int) -> None:
        super().__init__()
        self.axis, self.points, self.parts = axis, points, parts

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.points is None:  # equal parts, whatever the size at run time
            return tuple(torch.tensor_split(x, self.parts, dim=self.axis))
        return tuple(torch.tensor_split(x, self.points, dim=self.axis))


@register("Slice", "torch")
def _slice(node: Node, ctx: TorchContext) -> nn.Module:
    axis, sizes = slice_sizes(node, ctx.in_shapes[0])
    points = list(node.param.slice_param.slice_point) or None
    return Slice(axis, [int(p) for p in points] if points else None, len(sizes))


class Reshape(nn.Module):
    """Caffe's rule per call: axes before ``start`` and after ``end`` are kept, 0 copies the
    bottom's axis at the same place, -1 takes what is left."""

    def __init__(self, start: int, end: int, dims: list[int]) -> None:
        super().__init__()
        self.start, self.end, self.dims = start, end, dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = list(x.shape)
        new = [shape[self.start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        return x.reshape(*shape[: self.start], *new, *shape[self.end :])


@register("Reshape", "torch")
def _reshape(node: Node, ctx: TorchContext) -> nn.Module:
    start, end = reshape_span(node, len(ctx.in_shapes[0]))
    return Reshape(start, end, [int(d) for d in node.param.reshape_param.shape.dim])


class Crop(nn.Module):
    def __init__(self, axis: int, offsets: list[int]) -> None:
        super().__init__()
        self.axis, self.offsets = axis, offsets

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        for i, offset in enumerate(self.offsets, start=self.axis):
            x = x.narrow(i, offset, like.shape[i])
        return x


@register("Crop", "torch")
def _crop(node: Node, ctx: TorchContext) -> nn.Module:
    return Crop(*crop_offsets(node, ctx.in_shapes[0]))


class Tile(nn.Module):
    def __init__(self, repeats: tuple[int, ...]) -> None:
        super().__init__()
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(self.repeats)


@register("Tile", "torch")
def _tile(node: Node, ctx: TorchContext) -> nn.Module:
    ndim, p = len(ctx.in_shapes[0]), node.param.tile_param
    axis = canonical_axis(int(p.axis), ndim)
    return Tile(tuple(int(p.tiles) if i == axis else 1 for i in range(ndim)))
