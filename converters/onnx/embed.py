"""Embed: truncate the bottom's values to int64, Gather rows of the K x N table, add the bias."""

from __future__ import annotations

from onnx import TensorProto

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ._base import OnnxContext, OnnxOut


@register("Embed", "onnx")
def _embed(node: Node, ctx: OnnxContext) -> OnnxOut:
    require_weights(node)
    weight = ctx.tensor("weight", node.blobs[0])
    index, rows = ctx.name("index"), ctx.name("rows")
    bias = node.param.embed_param.bias_term
    nodes = [
        ctx.op("Cast", ctx.inputs, [index], "index", to=TensorProto.INT64),  # toward zero
        ctx.op(
            "Gather", [weight.name, index], [rows if bias else ctx.outputs[0]], "gather", axis=0
        ),
    ]
    inits = [weight]
    if bias:
        b = ctx.tensor("bias", node.blobs[1])
        nodes.append(ctx.op("Add", [rows, b.name], ctx.outputs))
        inits.append(b)
    return OnnxOut(nodes, inits)
