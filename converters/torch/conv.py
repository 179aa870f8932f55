"""Convolution and Deconvolution: grouped, dilated, per-axis kernel/stride/pad, 1-D to 3-D."""

from __future__ import annotations

from torch import nn

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.geometry import conv_geometry
from ._base import PerBottom, TorchContext, parameter

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_DECONV = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _check(node: Node) -> str | None:
    if node.param.convolution_param.axis != 1:
        return "convolution over an axis other than 1"
    return None


def _build(node: Node, ctx: TorchContext, table: dict) -> nn.Module:
    require_weights(node)
    p = node.param.convolution_param
    shape = ctx.in_shapes[0]
    n_spatial = len(shape) - 2
    if n_spatial not in table:
        raise ValueError(f"{n_spatial} spatial axes (1 to 3 are supported)")
    geom = conv_geometry(p, n_spatial)
    weight = node.blobs[0]
    in_ch = shape[1]
    layer = table[n_spatial](
        in_ch,
        int(p.num_output),
        geom.kernel,
        stride=geom.stride,
        padding=geom.pad,
        dilation=geom.dilation,
        groups=int(p.group),
        bias=bool(p.bias_term),
    )
    layer.weight = parameter(weight)
    if p.bias_term:
        layer.bias = parameter(node.blobs[1])
    return PerBottom(layer) if len(node.inputs) > 1 else layer


@register("Convolution", "torch", check=_check)
def _convolution(node: Node, ctx: TorchContext) -> nn.Module:
    return _build(node, ctx, _CONV)


@register("Deconvolution", "torch", check=_check)
def _deconvolution(node: Node, ctx: TorchContext) -> nn.Module:
    return _build(node, ctx, _DECONV)
