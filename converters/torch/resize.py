"""The forks' Upsample (caffe-segnet's unpooling, the YOLOv3 ports' nearest) and Interp
(DeepLab v2/PSPNet bilinear on the align-corners grid), as shapes/resize.py reads them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.resize import nearest_scale, unpools
from ._base import TorchContext


class Unpool(nn.Module):
    """caffe-segnet's Upsample: a zero top with ``top[mask[i]] = x[i]`` per plane (the later of
    two writes to one position stays, as torch's CPU scatter keeps it); negative entries (windows
    wholly in the padding) and entries past the plane (where the fork stops with a fatal error;
    the float64 reference refuses them by name) land in a spare slot that is cut off."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor, mask: torch.Tensor, *size: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        plane = self.height * self.width
        index = mask.reshape(n, c, -1).to(torch.int64)
        outside = (index < 0) | (index >= plane)  # past the plane: caffe-segnet's LOG(FATAL)
        index = torch.where(outside, torch.full_like(index, plane), index)
        top = x.new_zeros(n, c, plane + 1)
        top = top.scatter(2, index, x.reshape(n, c, -1))
        return top[:, :, :plane].reshape(n, c, self.height, self.width)


class Nearest(nn.Module):
    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)


@register("Upsample", "torch")
def _upsample(node: Node, ctx: TorchContext) -> nn.Module:
    if unpools(node):
        return Unpool(*ctx.out_shapes[0][2:])
    return Nearest(nearest_scale(node))


class Interp(nn.Module):
    """Crop ``-pad_beg`` / ``-pad_end``, then bilinear with align_corners (torch's grid is
    Caffe's interp.cpp: ``(in - 1) / (out - 1)`` in float, the next pixel clamped)."""

    def __init__(self, begin: int, end: int, height: int, width: int) -> None:
        super().__init__()
        self.begin, self.end, self.size = begin, end, (height, width)

    def forward(self, x: torch.Tensor, *like: torch.Tensor) -> torch.Tensor:
        if self.begin or self.end:
            b, e = self.begin, self.end
            x = x[:, :, b : x.shape[2] - e, b : x.shape[3] - e]
        if tuple(x.shape[2:]) == self.size:
            return x.clone()
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=True)


@register("Interp", "torch")
def _interp(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.interp_param
    return Interp(-int(p.pad_beg), -int(p.pad_end), *ctx.out_shapes[0][2:])
