"""Pooling with Caffe's rules: explicit asymmetric pads instead of ceil mode, and a constant
divisor correction where AVE windows overhang the padded input."""

from __future__ import annotations

import numpy as np

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
