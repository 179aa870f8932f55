"""C3D's Pooling3D in ONNX: an explicit Pad (MAX: the lowest float; AVE: zeros) so every window is
whole, MaxPool or AveragePool without pads, and for AVE a constant Mul that turns the kernel
volume into C3D's divisor where windows are clipped. Convolution3D is exported as the
Convolution it rewrites to (caffe_compat.shapes.volume)."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.volume import pool3d_geometry
from ._base import OnnxContext, OnnxOut

MAX = caffe_pb2.Pooling3DParameter.MAX


@register("Pooling3D", "onnx")
def _pooling3d(node: Node, ctx: OnnxContext) -> OnnxOut:
    geom = pool3d_geometry(node.param.pooling3d_param, ctx.in_shapes[0])
    x, y = ctx.inputs[0], ctx.outputs[0]
    nodes, inits = [], []
    if any(geom.pad) or any(geom.pad_end):
        value = float(np.finfo(np.float32).min) if geom.method == MAX else 0.0
        amounts = ctx.tensor("pads", [0, 0, *geom.pad, 0, 0, *geom.pad_end], np.int64)
        fill = ctx.tensor("pad_value", value)
        padded = ctx.name("padded")
        nodes.append(ctx.op("Pad", [x, amounts.name, fill.name], [padded], "pad"))
        inits += [amounts, fill]
        x = padded
    attrs = {"kernel_shape": list(geom.kernel), "strides": list(geom.stride)}
    if geom.method == MAX:
        nodes.append(ctx.op("MaxPool", [x], [y], **attrs))
        return OnnxOut(nodes, inits)
    spans = [np.array([s[2] for s in geom.spans(a)], dtype=np.float64) for a in range(3)]
    divisor = spans[0][:, None, None] * spans[1][None, :, None] * spans[2][None, None, :]
    volume = float(np.prod(geom.kernel))
    if np.all(divisor == volume):
        nodes.append(ctx.op("AveragePool", [x], [y], **attrs))
        return OnnxOut(nodes, inits)
    pooled = ctx.name("pooled")
    factor = ctx.tensor("divisor_fix", (volume / divisor)[None, None])
    nodes += [
        ctx.op("AveragePool", [x], [pooled], "pool", **attrs),
        ctx.op("Mul", [pooled, factor.name], [y]),
    ]
    return OnnxOut(nodes, [*inits, factor])
