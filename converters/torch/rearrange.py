"""ShuffleChannel, Reorg (darknet's), Transpose, Reverse and Im2col as reshapes, permutations
and unfold (shapes/rearrange.py; the index rules are in reference/rearrange.py's docstring)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.rearrange import (
    flip_axes,
    im2col_geometry,
    reorg_stride,
    reverse_axis,
    tile_dim,
    transpose_axes,
)
from ._base import TorchContext


class ShuffleChannel(nn.Module):
    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        y = x.reshape(n, self.group, c // self.group, -1).transpose(1, 2)
        return y.reshape(x.shape)


@register("ShuffleChannel", "torch")
def _shuffle_channel(node: Node, ctx: TorchContext) -> nn.Module:
    return ShuffleChannel(int(node.param.shuffle_channel_param.group))


class Tiling(nn.Module):
    """The highway-driving fork's Tiling: PyTorch's pixel shuffle, whose channel order
    (``c * t^2 + ty * t + tx``) is the fork's."""

    def __init__(self, t: int) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(x, self.t)


@register("Tiling", "torch")
def _tiling(node: Node, ctx: TorchContext) -> nn.Module:
    return Tiling(tile_dim(node.param.tiling_param))


class DarknetReorg(nn.Module):
    """The bottom read as C/s^2 x H*s x W*s, its (row, column) offsets moved to channels."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.stride
        y = x.reshape(n, c // (s * s), h, s, w, s).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * s * s, h // s, w // s)


@register("Reorg", "torch")
def _reorg(node: Node, ctx: TorchContext) -> nn.Module:
    return DarknetReorg(reorg_stride(node))


class Permute(nn.Module):
    def __init__(self, axes: list[int]) -> None:
        super().__init__()
        self.axes = axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.axes).contiguous()


@register("Transpose", "torch")
def _transpose(node: Node, ctx: TorchContext) -> nn.Module:
    return Permute(transpose_axes(node, len(ctx.in_shapes[0])))


class Reverse(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, (self.axis,))


@register("Reverse", "torch")
def _reverse(node: Node, ctx: TorchContext) -> nn.Module:
    return Reverse(reverse_axis(node, len(ctx.in_shapes[0])))


class Im2col(nn.Module):
    """BVLC's Im2col: torch's unfold orders the columns as im2col_cpu does (channel, then the
    kernel's rows and columns)."""

    def __init__(self, kernel, stride, pad, dilation, out: tuple[int, int]) -> None:
        super().__init__()
        self.options = {
            "kernel_size": kernel,
            "stride": stride,
            "padding": pad,
            "dilation": dilation,
        }
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = F.unfold(x, **self.options)
        return columns.reshape(x.shape[0], columns.shape[1], *self.out)


@register("Im2col", "torch")
def _im2col(node: Node, ctx: TorchContext) -> nn.Module:
    g = im2col_geometry(node)
    return Im2col(g.kernel, g.stride, g.pad, g.dilation, tuple(ctx.out_shapes[0][2:]))


class Flip(nn.Module):
    def __init__(self, axes: tuple[int, ...]) -> None:
        super().__init__()
        self.axes = axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, self.axes) if self.axes else x.clone()


@register("Flip", "torch")
def _flip(node: Node, ctx: TorchContext) -> nn.Module:
    return Flip(flip_axes(node))
