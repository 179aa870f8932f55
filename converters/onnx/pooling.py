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
    attrs = {
        "kernel_shape": list(geom.kernel),
        "strides": list(geom.stride),
        "pads": [*geom.pad_begin, *geom.pad_end],
    }
    if geom.method == MAX:
        return OnnxOut([ctx.op("MaxPool", [x], [y], **attrs)])
    if not geom.needs_divisor_fix:
        return OnnxOut([ctx.op("AveragePool", [x], [y], count_include_pad=1, **attrs)])
    rows = np.array(geom.axes[0].divisors(), dtype=np.float64)
    cols = np.array(geom.axes[1].divisors(), dtype=np.float64)
    fix = (geom.kernel[0] * geom.kernel[1]) / (rows[:, None] * cols[None, :])
    factor = ctx.tensor("divisor_fix", fix[None, None])
    pooled = ctx.name("pooled")
    return OnnxOut(
        [
            ctx.op("AveragePool", [x], [pooled], "pool", count_include_pad=1, **attrs),
            ctx.op("Mul", [pooled, factor.name], [y]),
        ],
        [factor],
    )
