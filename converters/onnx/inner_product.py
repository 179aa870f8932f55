"""InnerProduct: Flatten + Gemm for axis 1; Reshape + MatMul + Add otherwise."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.geometry import canonical_axis
from ._base import OnnxContext, OnnxOut


@register("InnerProduct", "onnx")
def _inner_product(node: Node, ctx: OnnxContext) -> OnnxOut:
    require_weights(node)
    p = node.param.inner_product_param
    shape = ctx.in_shapes[0]
    axis = canonical_axis(int(p.axis), len(shape))
    x, y = ctx.inputs[0], ctx.outputs[0]
    weight = ctx.tensor("weight", node.blobs[0])  # N x K, or K x N when transposed
    inits = [weight]
    bias_name = ""
    if p.bias_term:
        bias = ctx.tensor("bias", node.blobs[1])
        inits.append(bias)
        bias_name = bias.name
    if axis == 1:
        nodes = []
        flat = x
        if len(shape) != 2:
            flat = ctx.name("flat")
            nodes.append(ctx.op("Flatten", [x], [flat], "flatten", axis=1))
        inputs = [flat, weight.name] + ([bias_name] if bias_name else [])
        nodes.append(ctx.op("Gemm", inputs, [y], transB=0 if p.transpose else 1))
        return OnnxOut(nodes, inits)
    target = ctx.tensor("shape", [0] * axis + [-1], np.int64)
    inits.append(target)
    flat, product = ctx.name("flat"), ctx.name("matmul")
    matrix = ctx.tensor("weight_kn", node.blobs[0] if p.transpose else node.blobs[0].T)
    inits[0] = matrix
    nodes = [
        ctx.op("Reshape", [x, target.name], [flat], "reshape"),
        ctx.op("MatMul", [flat, matrix.name], [product if bias_name else y], "matmul"),
    ]
    if bias_name:
        nodes.append(ctx.op("Add", [product, bias_name], [y]))
    return OnnxOut(nodes, inits)
