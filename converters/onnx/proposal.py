"""Proposal in ONNX (py-faster-rcnn's RPN proposal layer; see caffe_compat.shapes.proposal).

The anchors of every cell are a constant (the map size is static). Decoding and clipping run in
float64 as the original's numpy does; the min_size filter is NonZero + Gather; the
``pre_nms_topn`` best scores a TopK; the NMS is ``NonMaxSuppression`` with ``max_output`` =
``post_nms_topn``, fed boxes whose far corners are moved by +1, so its plain areas and
overlaps are py-faster-rcnn's +1 ones. The ROI count is dynamic, as in Caffe.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...ir.graph import Node
from ...registry import register
from ...shapes.proposal import proposal_settings
from ._base import OnnxContext, OnnxOut
from .detection import _Graph

I64, F64 = np.int64, np.float64


def every_anchor(anchors: np.ndarray, h: int, w: int, stride: int) -> np.ndarray:
    """(H * W * A, 4) anchors in (y, x, anchor) order."""
    sx, sy = np.meshgrid(np.arange(w) * stride, np.arange(h) * stride)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)
    return (anchors[None] + shifts[:, None]).reshape(-1, 4)


@register("Proposal", "onnx")
def _proposal(node: Node, ctx: OnnxContext) -> OnnxOut:
    s = proposal_settings(node.param.proposal_param)
    a = len(s.anchors)
    _, _, h, w = ctx.in_shapes[0]
    g = _Graph(ctx)
    anchors = every_anchor(s.anchors, h, w, s.feat_stride)
    widths = anchors[:, 2] - anchors[:, 0] + 1.0
    heights = anchors[:, 3] - anchors[:, 1] + 1.0
    cx, cy = anchors[:, 0] + 0.5 * widths, anchors[:, 1] + 0.5 * heights
    fg = g("Slice", ctx.inputs[0], g.const([a], I64), g.const([2 * a], I64), g.const([1], I64))
    score = g("Reshape", g("Transpose", fg, perm=[0, 2, 3, 1]), g.const([-1], I64))
    d = g("Reshape", ctx.inputs[1], g.const([a, 4, h, w], I64))
    d = g(
        "Cast",
        g("Reshape", g("Transpose", d, perm=[2, 3, 0, 1]), g.const([-1, 4], I64)),
        to=TensorProto.DOUBLE,
    )
    dx, dy, dw, dh = (g("Gather", d, g.const(k, I64), axis=1) for k in range(4))
    px = g("Add", g("Mul", dx, g.const(widths, F64)), g.const(cx, F64))
    py = g("Add", g("Mul", dy, g.const(heights, F64)), g.const(cy, F64))
    half_w = g("Mul", g("Exp", dw), g.const(0.5 * widths, F64))
    half_h = g("Mul", g("Exp", dh), g.const(0.5 * heights, F64))
    info = g("Cast", g("Reshape", ctx.inputs[2], g.const([-1], I64)), to=TensorProto.DOUBLE)
    height, width, scale = (g("Gather", info, g.const([k], I64), axis=0) for k in range(3))
    one, zero = g.const([1.0], F64), g.const([0.0], F64)
    x_max, y_max = g("Sub", width, one), g("Sub", height, one)

    def clip(v: str, top: str) -> str:
        return g("Min", g("Max", v, zero), top)

    x1, x2 = clip(g("Sub", px, half_w), x_max), clip(g("Add", px, half_w), x_max)
    y1, y2 = clip(g("Sub", py, half_h), y_max), clip(g("Add", py, half_h), y_max)
    least = g("Mul", scale, g.const([s.min_size], F64))
    big = g(
        "And",
        g("GreaterOrEqual", g("Add", g("Sub", x2, x1), one), least),
        g("GreaterOrEqual", g("Add", g("Sub", y2, y1), one), least),
    )
    boxes = g("Concat", *(g.unsqueeze(v, 1) for v in (x1, y1, x2, y2)), axis=1)
    boxes, score = g.rows_where(boxes, big), g.rows_where(score, big)
    count = g("Shape", score)
    k = count if s.pre_nms_topn <= 0 else g("Min", count, g.const([s.pre_nms_topn], I64))
    best, order = g("TopK", score, k, outputs=2, axis=0, largest=1, sorted=1)
    boxes = g("Gather", boxes, order, axis=0)
    most = s.post_nms_topn if s.post_nms_topn > 0 else 2**31 - 1
    if s.nms_thresh < 1:
        plus_one = g.const([[0.0, 0.0, 1.0, 1.0]], F64)
        shifted = g("Cast", g("Add", boxes, plus_one), to=TensorProto.FLOAT)
        selected = g(
            "NonMaxSuppression",
            g("Unsqueeze", shifted, g.const([0], I64)),
            g("Unsqueeze", best, g.const([0, 1], I64)),
            g.const([most], I64),
            g.const([s.nms_thresh], np.float32),
        )
        keep = g("Gather", selected, g.const(2, I64), axis=1)
    else:  # an overlap never exceeds 1: no NMS (SSH's test phase), the first ``most`` boxes
        last = g("Min", g("Shape", best), g.const([most], I64))
        keep = g("Range", g.const(0, I64), g("Squeeze", last, g.const([0], I64)), g.const(1, I64))
    kept = g("Gather", boxes, keep, axis=0)
    ids = g("Mul", g("Slice", kept, g.const([0], I64), g.const([1], I64), g.const([1], I64)), zero)
    rois = g("Concat", ids, kept, axis=1)
    g("Cast", rois, to=TensorProto.FLOAT, out=ctx.outputs[0])
    if len(ctx.outputs) > 1:
        g("Unsqueeze", g("Gather", best, keep, axis=0), g.const([1], I64), out=ctx.outputs[1])
    return OnnxOut(g.nodes, g.inits)
