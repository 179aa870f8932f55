"""Layers that route or reshape tensors: Split, Concat, Flatten, Softmax."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ...registry import register
from ...shapes.geometry import canonical_axis
from ._base import OnnxContext, OnnxOut


@register("Split", "onnx")
def _split(node: Node, ctx: OnnxContext) -> OnnxOut:
    x = ctx.inputs[0]
    return OnnxOut(
        [ctx.op("Identity", [x], [out], f"copy{i}") for i, out in enumerate(ctx.outputs)]
    )


@register("Concat", "onnx")
def _concat(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.concat_param
    ndim = len(ctx.in_shapes[0])
    axis = int(p.concat_dim) if p.HasField("concat_dim") and not p.HasField("axis") else int(p.axis)
    return OnnxOut([ctx.op("Concat", ctx.inputs, ctx.outputs, axis=canonical_axis(axis, ndim))])


@register("Flatten", "onnx")
def _flatten(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.flatten_param
    shape = ctx.in_shapes[0]
    start = canonical_axis(int(p.axis), len(shape))
    end = canonical_axis(int(p.end_axis), len(shape))
    if start == 1 and end == len(shape) - 1:
        return OnnxOut([ctx.op("Flatten", ctx.inputs, ctx.outputs, axis=1)])
    target = ctx.tensor("shape", [0] * start + [-1] + list(shape[end + 1 :]), np.int64)
    return OnnxOut([ctx.op("Reshape", [ctx.inputs[0], target.name], ctx.outputs)], [target])


@register("Softmax", "onnx")
def _softmax(node: Node, ctx: OnnxContext) -> OnnxOut:
    axis = canonical_axis(int(node.param.softmax_param.axis), len(ctx.in_shapes[0]))
    return OnnxOut([ctx.op("Softmax", ctx.inputs, ctx.outputs, axis=axis)])
