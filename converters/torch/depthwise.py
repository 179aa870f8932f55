"""The forks' depthwise convolutions, built by the Convolution converter with ``group`` = C."""

from __future__ import annotations

from torch import nn

from ... import registry
from ...ir.graph import Node
from ...registry import register
from ...shapes.depthwise import DEPTHWISE_TYPES, as_grouped_convolution, input_channels
from ._base import TorchContext


def _check(node: Node) -> str | None:
    entry = registry.lookup("Convolution", "torch")
    return entry.check(node) if entry is not None and entry.check is not None else None


@register(DEPTHWISE_TYPES, "torch", check=_check)
def _depthwise(node: Node, ctx: TorchContext) -> nn.Module:
    conv = as_grouped_convolution(node, input_channels(node, ctx.in_shapes[0]))
    entry = registry.lookup("Convolution", "torch")
    assert entry is not None  # built in
    return entry.fn(conv, TorchContext(ctx.graph, conv))
