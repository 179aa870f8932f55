"""Pooling with Caffe's rules: explicit asymmetric pads instead of ceil mode, and a constant
divisor correction where AVE windows overhang the padded input."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...ir.graph import Node
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.geometry import pool_geometry, unsupported_pooling
from ._base import OnnxContext, OnnxOut

MAX, AVE = caffe_pb2.PoolingParameter.MAX, caffe_pb2.PoolingParameter.AVE


@register("Pooling", "onnx", check=unsupported_pooling)
def _pooling(node: Node, ctx: OnnxContext) -> OnnxOut:
    shape = ctx.in_shapes[0]
    geom = pool_geometry(node.param.pooling_param, shape[2], shape[3])
    x, y = ctx.inputs[0], ctx.outputs[0]
    if len(ctx.outputs) > 1:
        return _max_with_mask(ctx, geom)
    if geom.global_pooling:
        op = "GlobalMaxPool" if geom.method == MAX else "GlobalAveragePool"
        return OnnxOut([ctx.op(op, [x], [y])])
    pads = [*geom.pad_begin, *geom.pad_end]
    attrs = {"kernel_shape": list(geom.kernel), "strides": list(geom.stride), "pads": pads}
    pre: list = []  # an explicit Pad in front when a pad reaches the kernel size
    inits: list = []
    if any(p >= k for p, k in zip(pads, [*geom.kernel, *geom.kernel])):
        # ONNX Runtime refuses pads >= kernel (a stride beyond the kernel with ceil rounding
        # gives such end padding, and windows wholly past the input): pad the input itself and
        # pool without pads. Caffe starts a MAX window at -FLT_MAX; AVE pads with zeros.
        value = float(np.finfo(np.float32).min) if geom.method == MAX else 0.0
        amounts = ctx.tensor("pads", [0, 0, *geom.pad_begin, 0, 0, *geom.pad_end], np.int64)
        fill = ctx.tensor("pad_value", value)
        padded = ctx.name("padded")
        pre = [ctx.op("Pad", [x, amounts.name, fill.name], [padded], "pad")]
        inits = [amounts, fill]
        x, attrs["pads"] = padded, [0, 0, 0, 0]
    if geom.method == MAX:
        return OnnxOut([*pre, ctx.op("MaxPool", [x], [y], **attrs)], inits)
    if not geom.needs_divisor_fix:
        return OnnxOut([*pre, ctx.op("AveragePool", [x], [y], count_include_pad=1, **attrs)], inits)
    rows = np.array(geom.axes[0].divisors(), dtype=np.float64)
    cols = np.array(geom.axes[1].divisors(), dtype=np.float64)
    fix = (geom.kernel[0] * geom.kernel[1]) / (rows[:, None] * cols[None, :])
    factor = ctx.tensor("divisor_fix", fix[None, None])
    pooled = ctx.name("pooled")
    return OnnxOut(
        [
            *pre,
            ctx.op("AveragePool", [x], [pooled], "pool", count_include_pad=1, **attrs),
            ctx.op("Mul", [pooled, factor.name], [y]),
        ],
        [*inits, factor],
    )


def _max_with_mask(ctx: OnnxContext, geom) -> OnnxOut:
    """MaxPool's Indices output turned into Caffe's mask: the input is padded explicitly with the
    lowest float (padding never wins), the flat index into the padded tensor becomes ``h * W +
    w`` of the unpadded plane, -1 where a window lies wholly in the padding, as a float."""
    h, w = ctx.in_shapes[0][2:]
    (ph, pw), (eh, ew) = geom.pad_begin, geom.pad_end
    hp, wp = h + ph + eh, w + pw + ew
    x = ctx.inputs[0]
    amounts = ctx.tensor("pads", [0, 0, ph, pw, 0, 0, eh, ew], np.int64)
    fill = ctx.tensor("pad_value", float(np.finfo(np.float32).min))
    plane, width = ctx.tensor("plane", hp * wp, np.int64), ctx.tensor("width", wp, np.int64)
    top, left = ctx.tensor("top", ph, np.int64), ctx.tensor("left", pw, np.int64)
    height_in, width_in = ctx.tensor("h", h, np.int64), ctx.tensor("w", w, np.int64)
    zero, minus = ctx.tensor("zero", 0, np.int64), ctx.tensor("minus_one", -1, np.int64)
    names = {
        k: ctx.name(k)
        for k in (
            "padded",
            "index",
            "local",
            "prow",
            "pcol",
            "row",
            "col",
            "rowok",
            "rowlt",
            "colok",
            "collt",
            "ok1",
            "ok2",
            "ok",
            "flat_row",
            "flat",
            "chosen",
        )
    }
    v = names
    attrs = {"kernel_shape": list(geom.kernel), "strides": list(geom.stride)}
    nodes = [
        ctx.op("Pad", [x, amounts.name, fill.name], [v["padded"]], "pad"),
        ctx.op("MaxPool", [v["padded"]], [ctx.outputs[0], v["index"]], "pool", **attrs),
        ctx.op("Mod", [v["index"], plane.name], [v["local"]], "local"),
        ctx.op("Div", [v["local"], width.name], [v["prow"]], "prow"),
        ctx.op("Mod", [v["local"], width.name], [v["pcol"]], "pcol"),
        ctx.op("Sub", [v["prow"], top.name], [v["row"]], "row"),
        ctx.op("Sub", [v["pcol"], left.name], [v["col"]], "col"),
        ctx.op("GreaterOrEqual", [v["row"], zero.name], [v["rowok"]], "rowok"),
        ctx.op("Less", [v["row"], height_in.name], [v["rowlt"]], "rowlt"),
        ctx.op("GreaterOrEqual", [v["col"], zero.name], [v["colok"]], "colok"),
        ctx.op("Less", [v["col"], width_in.name], [v["collt"]], "collt"),
        ctx.op("And", [v["rowok"], v["rowlt"]], [v["ok1"]], "ok1"),
        ctx.op("And", [v["colok"], v["collt"]], [v["ok2"]], "ok2"),
        ctx.op("And", [v["ok1"], v["ok2"]], [v["ok"]], "ok"),
        ctx.op("Mul", [v["row"], width_in.name], [v["flat_row"]], "flat_row"),
        ctx.op("Add", [v["flat_row"], v["col"]], [v["flat"]], "flat"),
        ctx.op("Where", [v["ok"], v["flat"], minus.name], [v["chosen"]], "chosen"),
        ctx.op("Cast", [v["chosen"]], [ctx.outputs[1]], "mask", to=TensorProto.FLOAT),
    ]
    inits = [amounts, fill, plane, width, top, left, height_in, width_in, zero, minus]
    return OnnxOut(nodes, inits)
