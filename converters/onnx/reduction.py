"""ArgMax via TopK on the reversed axis (so ties give the higher index, as in Caffe) and
Reduction via a flatten and ONNX's reductions."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...ir.graph import Node
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.geometry import canonical_axis
from ._base import OnnxContext, OnnxOut

Op = caffe_pb2.ReductionParameter
_REDUCE = {
    Op.SUM: "ReduceSum",
    Op.ASUM: "ReduceL1",
    Op.SUMSQ: "ReduceSumSquare",
    Op.MEAN: "ReduceMean",
}


def _i64(ctx: OnnxContext, name: str, values: list[int]) -> TensorProto:
    return ctx.tensor(name, values, np.int64)


def _reversed_top_k(ctx: OnnxContext, x: str, axis: int, k: int) -> tuple[list, list, str, str]:
    """TopK of ``x`` reversed along ``axis`` (ONNX breaks ties by the lower index, so this gives
    Caffe's higher-index-first order); returns nodes, initializers, values and float indices."""
    consts = {
        "k": [k],
        "axis": [axis],
        "minus_one": [-1],
        "to_front": [np.iinfo(np.int64).min],
        "axis_end": [axis + 1],
    }
    c = {name: _i64(ctx, name, v) for name, v in consts.items()}
    n = {s: ctx.name(s) for s in ("shape", "length", "last", "rev", "values", "rev_index", "index")}
    nodes = [  # the axis length comes from the input, so the batch axis may be used too
        ctx.op("Shape", [x], [n["shape"]], "shape"),
        ctx.op("Slice", [n["shape"], c["axis"].name, c["axis_end"].name], [n["length"]], "length"),
        ctx.op("Add", [n["length"], c["minus_one"].name], [n["last"]], "last"),
        ctx.op(
            "Slice",
            [x, c["minus_one"].name, c["to_front"].name, c["axis"].name, c["minus_one"].name],
            [n["rev"]],
            "reverse",
        ),
        ctx.op("TopK", [n["rev"], c["k"].name], [n["values"], n["rev_index"]], "topk", axis=axis),
        ctx.op("Sub", [n["last"], n["rev_index"]], [n["index"]], "index"),
        ctx.op("Cast", [n["index"]], [ctx.name("index_f")], "cast", to=TensorProto.FLOAT),
    ]
    return nodes, list(c.values()), n["values"], ctx.name("index_f")


@register("ArgMax", "onnx")
def _argmax(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.argmax_param
    x, y, k = ctx.inputs[0], ctx.outputs[0], int(p.top_k)
    if p.HasField("axis"):
        axis = canonical_axis(int(p.axis), len(ctx.in_shapes[0]))
        nodes, inits, values, index = _reversed_top_k(ctx, x, axis, k)
        nodes.append(ctx.op("Identity", [values if p.out_max_val else index], [y]))
        return OnnxOut(nodes, inits)
    # No axis: the top k of each item's values, written as (N, 1 or 2, k, 1, ...).
    flat_shape = _i64(ctx, "flat_shape", [0, -1])
    target = _i64(ctx, "out_shape", [0, *ctx.out_shapes[0][1:]])
    flat, stacked = ctx.name("flat"), ctx.name("stacked")
    nodes, inits, values, index = _reversed_top_k(ctx, flat, 1, k)
    nodes = [
        ctx.op("Reshape", [x, flat_shape.name], [flat], "flat"),
        *nodes,
        ctx.op("Concat", [index, values] if p.out_max_val else [index], [stacked], "stack", axis=1),
        ctx.op("Reshape", [stacked, target.name], [y]),
    ]
    return OnnxOut(nodes, [*inits, flat_shape, target])


@register("Reduction", "onnx")
def _reduction(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.reduction_param
    axis = canonical_axis(int(p.axis), len(ctx.in_shapes[0]))
    x, y = ctx.inputs[0], ctx.outputs[0]
    target = _i64(ctx, "flat_shape", [0] * axis + [-1])  # every axis from ``axis`` in one
    flat, reduced = ctx.name("flat"), ctx.name("reduced") if p.coeff != 1 else y
    inits = [target]
    op = _REDUCE[p.operation]
    if op == "ReduceSum":  # axes are an input from opset 13, an attribute for the others
        inits.append(_i64(ctx, "last_axis", [-1]))
        reduce = ctx.op(op, [flat, inits[-1].name], [reduced], "reduce", keepdims=0)
    else:
        reduce = ctx.op(op, [flat], [reduced], "reduce", axes=[-1], keepdims=0)
    nodes = [ctx.op("Reshape", [x, target.name], [flat], "flatten"), reduce]
    if p.coeff != 1:
        coeff = ctx.tensor("coeff", p.coeff)
        nodes.append(ctx.op("Mul", [reduced, coeff.name], [y]))
        inits.append(coeff)
    return OnnxOut(nodes, inits)
