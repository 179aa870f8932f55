"""Weight-free elementwise layers: ReLU, Dropout (inference)."""

from __future__ import annotations

from ...ir.graph import Node
from ...registry import register
from ._base import OnnxContext, OnnxOut


@register("ReLU", "onnx")
def _relu(node: Node, ctx: OnnxContext) -> OnnxOut:
    slope = float(node.param.relu_param.negative_slope)
    if slope:
        return OnnxOut([ctx.op("LeakyRelu", ctx.inputs, ctx.outputs, alpha=slope)])
    return OnnxOut([ctx.op("Relu", ctx.inputs, ctx.outputs)])


@register("Dropout", "onnx")
def _dropout(node: Node, ctx: OnnxContext) -> OnnxOut:
    return OnnxOut([ctx.op("Identity", ctx.inputs, ctx.outputs)])
