"""CTCGreedyDecoder in ONNX (caffe_ocr; see caffe_compat.shapes.ctc): ArgMax (the first
maximum), a keep mask against the blank and the previous step, then TopK (smallest first) on
``t`` for kept steps and ``T + t`` for dropped ones, and GatherElements of the masked labels."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...ir.graph import Node
from ...registry import register
from ...shapes.ctc import blank_of
from ._base import OnnxContext, OnnxOut
from .detection import _Graph

I64 = np.int64


@register("CTCGreedyDecoder", "onnx")
def _ctc_greedy(node: Node, ctx: OnnxContext) -> OnnxOut:
    t, _, c = ctx.in_shapes[0][:3]
    p = node.param.ctc_decoder_param
    g = _Graph(ctx)
    scores = g("Reshape", ctx.inputs[0], g.const([t, -1, c], I64))
    best = g("Transpose", g("ArgMax", scores, axis=2, keepdims=0), perm=[1, 0])  # (N, T) int64
    keep = g("Not", g("Equal", best, g.const(blank_of(p, c), I64)))
    if p.ctc_merge_repeated:
        first = g("Slice", best, g.const([0], I64), g.const([1], I64), g.const([1], I64))
        none = g("Sub", g("Mul", first, g.const(0, I64)), g.const(1, I64))  # -1s, N x 1
        head = g("Slice", best, g.const([0], I64), g.const([t - 1], I64), g.const([1], I64))
        previous = g("Concat", none, head, axis=1)
        keep = g("And", keep, g("Not", g("Equal", best, previous)))
    steps = g.const(np.arange(t, dtype=np.float32)[None], np.float32)
    key = g("Where", keep, steps, g("Add", steps, g.const(float(t), np.float32)))
    _, order = g("TopK", key, g.const([t], I64), outputs=2, axis=1, largest=0, sorted=1)
    labels = g("Where", keep, best, g.const(-1, I64))
    rows = g("Cast", g("GatherElements", labels, order, axis=1), to=TensorProto.FLOAT)
    n = g("Slice", g("Shape", best), g.const([0], I64), g.const([1], I64))
    shape = g("Concat", n, g.const([t, 1, 1], I64), axis=0)
    g("Reshape", rows, shape, out=ctx.outputs[0])
    return OnnxOut(g.nodes, g.inits)
