"""Layers that route, cut, reshape or repeat blobs: Split, Concat, Flatten, Slice, Reshape, Crop,
Tile, and Silence (consumes its bottoms; Caffe's backward writes them zero diffs)."""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.geometry import canonical_axis
from ...shapes.reshaping import (
    auto_crop_offsets,
    center_crop_sizes,
    crop_offsets,
    reshape_span,
    slice_sizes,
)
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


@register("AutoCrop", "torch")
def _auto_crop(node: Node, ctx: TorchContext) -> nn.Module:
    return Crop(2, list(auto_crop_offsets(node)))


class CropCenter(nn.Module):
    """``x[c0:-c0, c1:-c1, ...]`` at any size of each axis (the batch stays free)."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.sizes = sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, crop in enumerate(self.sizes):
            if crop:
                x = x.narrow(axis, crop, x.shape[axis] - 2 * crop)
        return x


@register("CropCenter", "torch")
def _crop_center(node: Node, ctx: TorchContext) -> nn.Module:
    return CropCenter(center_crop_sizes(node, ctx.in_shapes[0]))


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


class Silence(nn.Module):
    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ()


@register("Silence", "torch")
def _silence(node: Node, ctx: TorchContext) -> nn.Module:
    return Silence()
