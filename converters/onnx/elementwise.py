"""Scale and Bias as Mul/Add with operands reshaped to broadcast; Eltwise as Add/Mul/Max chains."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.elementwise import operand_axis
from ._base import OnnxContext, OnnxOut

Op = caffe_pb2.EltwiseParameter


def _affine(node: Node, ctx: OnnxContext, kind: str, axis: int, extra_bias: bool) -> OnnxOut:
    shapes = ctx.in_shapes
    if len(shapes) == 1 or extra_bias:
        require_weights(node)
    blobs = list(node.blobs)
    operand = shapes[1] if len(shapes) > 1 else tuple(blobs[0].shape)
    trailing = (1,) * (len(shapes[0]) - operand_axis(shapes[0], operand, axis) - len(operand))
    nodes, inits, names = [], [], {}
    if len(shapes) == 1:
        inits.append(ctx.tensor(kind, blobs.pop(0).reshape(*operand, *trailing)))
        names[kind] = inits[-1].name
    else:  # the second bottom: keep its axes (0 copies them, batch included), append 1s
        target = ctx.tensor("operand_shape", [0] * len(operand) + list(trailing), np.int64)
        names[kind] = ctx.name("operand")
        nodes.append(ctx.op("Reshape", [ctx.inputs[1], target.name], [names[kind]], "operand"))
        inits.append(target)
    if extra_bias:
        inits.append(ctx.tensor("bias", blobs.pop(0).reshape(*operand, *trailing)))
        names["bias"] = inits[-1].name
    x, y = ctx.inputs[0], ctx.outputs[0]
    if "scale" in names:
        scaled = ctx.name("scaled") if "bias" in names else y
        nodes.append(ctx.op("Mul", [x, names["scale"]], [scaled], "scale" if scaled != y else None))
        x = scaled
    if "bias" in names:
        nodes.append(ctx.op("Add", [x, names["bias"]], [y]))
    return OnnxOut(nodes, inits)


@register("Scale", "onnx")
def _scale(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.scale_param
    return _affine(node, ctx, "scale", int(p.axis), bool(p.bias_term))


@register("Bias", "onnx")
def _bias(node: Node, ctx: OnnxContext) -> OnnxOut:
    return _affine(node, ctx, "bias", int(node.param.bias_param.axis), False)


@register("Eltwise", "onnx")
def _eltwise(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.eltwise_param
    xs, y = ctx.inputs, ctx.outputs[0]
    if p.operation == Op.MAX:
        return OnnxOut([ctx.op("Max", xs, [y])])
    nodes, inits = [], []
    if p.operation == Op.SUM and any(c != 1 for c in p.coeff):
        terms = []
        for i, (x, c) in enumerate(zip(xs, p.coeff)):
            if c == 1:
                terms.append(x)
                continue
            coeff = ctx.tensor(f"coeff{i}", c)
            terms.append(ctx.name(f"term{i}"))
            nodes.append(ctx.op("Mul", [x, coeff.name], [terms[-1]], f"term{i}"))
            inits.append(coeff)
        xs = terms
    op = "Mul" if p.operation == Op.PROD else "Add"
    acc = xs[0]
    for i, x in enumerate(xs[1:], start=1):
        out = y if i == len(xs) - 1 else ctx.name(f"acc{i}")
        nodes.append(ctx.op(op, [acc, x], [out], None if out == y else f"acc{i}"))
        acc = out
    return OnnxOut(nodes, inits)


@register("Axpy", "onnx")
def _axpy(node: Node, ctx: OnnxContext) -> OnnxOut:
    """SENet's Axpy: ``a * x + y``, ``a`` reshaped to N x C x 1 ... for broadcasting."""
    a, x, y = ctx.inputs
    ndim = len(ctx.in_shapes[1])
    shape = ctx.tensor("shape", [0, ctx.in_shapes[1][1], *(1,) * (ndim - 2)], np.int64)
    scale, scaled = ctx.name("scale"), ctx.name("scaled")
    nodes = [
        ctx.op("Reshape", [a, shape.name], [scale], "scale"),
        ctx.op("Mul", [scale, x], [scaled], "mul"),
        ctx.op("Add", [scaled, y], ctx.outputs),
    ]
    return OnnxOut(nodes, [shape])
