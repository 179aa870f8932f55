"""Convolution and Deconvolution: grouped, dilated, per-axis kernel/stride/pad, 1-D to 3-D."""

from __future__ import annotations

from torch import nn

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.geometry import conv_geometry
from ._base import PerBottom, TorchContext, parameter
from .numerics import CaffeConv


def _check(node: Node) -> str | None:
    if node.param.convolution_param.axis != 1:
        return "convolution over an axis other than 1"
    return None


def _build(node: Node, ctx: TorchContext, transposed: bool) -> nn.Module:
    require_weights(node)
    p = node.param.convolution_param
    n_spatial = len(ctx.in_shapes[0]) - 2
    if not 1 <= n_spatial <= 3:
        raise ValueError(f"{n_spatial} spatial axes (1 to 3 are supported)")
    geom = conv_geometry(p, n_spatial)
    bias = parameter(node.blobs[1]).data if p.bias_term else None
    layer = CaffeConv(
        parameter(node.blobs[0]).data,
        bias,
        geom.stride,
        geom.pad,
        geom.dilation,
        int(p.group),
        transposed,
    )
    layer.blob_slots = ("weight", "bias") if bias is not None else ("weight",)
    if len(node.inputs) > 1:
        shared = PerBottom(layer)
        shared.blob_slots = tuple(f"layer.{slot}" for slot in layer.blob_slots)
        return shared
    return layer


@register("Convolution", "torch", check=_check)
def _convolution(node: Node, ctx: TorchContext) -> nn.Module:
    return _build(node, ctx, transposed=False)


@register("Deconvolution", "torch", check=_check)
def _deconvolution(node: Node, ctx: TorchContext) -> nn.Module:
    return _build(node, ctx, transposed=True)
