"""Softmax over any axis."""

from __future__ import annotations

from ...ir.graph import Node
from ...registry import register
from ...shapes.geometry import canonical_axis
from ._base import OnnxContext, OnnxOut


@register("Softmax", "onnx")
def _softmax(node: Node, ctx: OnnxContext) -> OnnxOut:
    axis = canonical_axis(int(node.param.softmax_param.axis), len(ctx.in_shapes[0]))
    return OnnxOut([ctx.op("Softmax", ctx.inputs, ctx.outputs, axis=axis)])
