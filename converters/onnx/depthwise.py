"""The forks' depthwise convolutions, built by the Convolution converter with ``group`` = C."""

from __future__ import annotations

from ... import registry
from ...ir.graph import Node
from ...registry import register
from ...shapes.depthwise import DEPTHWISE_TYPES, as_grouped_convolution, input_channels
from ._base import OnnxContext, OnnxOut


def _check(node: Node) -> str | None:
    entry = registry.lookup("Convolution", "onnx")
    return entry.check(node) if entry is not None and entry.check is not None else None


@register(DEPTHWISE_TYPES, "onnx", check=_check)
def _depthwise(node: Node, ctx: OnnxContext) -> OnnxOut:
    conv = as_grouped_convolution(node, input_channels(node, ctx.in_shapes[0]))
    entry = registry.lookup("Convolution", "onnx")
    assert entry is not None  # built in
    return entry.fn(conv, OnnxContext(ctx.graph, conv, ctx.opset))
