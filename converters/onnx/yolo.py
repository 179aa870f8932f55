"""Yolov3DetectionOutput and YoloDetectionOutput in ONNX (see caffe_compat.shapes.yolo): each map
decoded with element-wise ops (static sizes), candidates kept by NonZero + Gather, ordered by
TopK, one class-agnostic ``NonMaxSuppression`` on their corners, the rows gathered; with no
detection at all, the fork's placeholder rows (a Concat sliced to the right length). ONNX
suppresses above the overlap threshold where the fork suppresses at it: they differ only on an
exact tie."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ...registry import register
from ...shapes.yolo import YoloSettings, yolo2_settings, yolo_settings
from ._base import OnnxContext, OnnxOut
from .detection import _Graph

I64, F32 = np.int64, np.float32


def _decode(
    g: _Graph, s: YoloSettings, t: int, x: str, side: int, per_class: bool = True
) -> tuple[str, str, str]:
    """Flat (K, 4) centre-size boxes, (K,) scores and (K,) labels of one map, loop order (per
    box and class; ``per_class`` False: the boxes alone, one per box, for v2)."""
    cells = side * side
    v = g("Reshape", x, g.const([-1, s.boxes, 5 + s.classes, cells], I64))
    v = g("Transpose", v, perm=[0, 3, 1, 2])  # B, cell, n, k

    def part(start: int, end: int) -> str:
        return g("Slice", v, g.const([start], I64), g.const([end], I64), g.const([3], I64))

    cell = np.arange(cells)
    i = g.const((cell % side).astype(F32).reshape(1, cells, 1, 1))
    j = g.const((cell // side).astype(F32).reshape(1, cells, 1, 1))
    anchors = np.array([s.anchor(t, n) for n in range(s.boxes)], F32)
    size = F32(side * s.scales[t])
    cx = g("Div", g("Add", i, g("Sigmoid", part(0, 1))), g.const(F32(side)))
    cy = g("Div", g("Add", j, g("Sigmoid", part(1, 2))), g.const(F32(side)))
    w = g(
        "Div",
        g("Mul", g("Exp", part(2, 3)), g.const(anchors[:, :1].reshape(1, 1, -1, 1))),
        g.const(size),
    )
    h = g(
        "Div",
        g("Mul", g("Exp", part(3, 4)), g.const(anchors[:, 1:].reshape(1, 1, -1, 1))),
        g.const(size),
    )
    if not per_class:
        return g("Reshape", g("Concat", cx, cy, w, h, axis=3), g.const([-1, 4], I64)), "", ""
    score = g("Mul", g("Sigmoid", part(5, 5 + s.classes)), g("Sigmoid", part(4, 5)))  # B,cell,n,C
    boxes = g.unsqueeze(g("Concat", cx, cy, w, h, axis=3), 3)  # B, cell, n, 1, 4
    wide = g("Concat", g("Shape", score), g.const([4], I64), axis=0)
    boxes = g("Reshape", g("Expand", boxes, wide), g.const([-1, 4], I64))
    label = g("Expand", g.const(np.arange(s.classes, dtype=F32)), g("Shape", score))
    flat = g.const([-1], I64)
    return boxes, g("Reshape", score, flat), g("Reshape", label, flat)


def _finish(g: _Graph, s: YoloSettings, boxes: str, scores: str, labels: str, like: str, out: str):
    """Sorted candidates through one NonMaxSuppression into the fork's rows (or placeholders)."""
    best, order = g("TopK", scores, g("Shape", scores), outputs=2, axis=0, largest=1, sorted=1)
    boxes = g("Gather", boxes, order, axis=0)
    labels = g("Gather", labels, order, axis=0)
    cx, cy, w, h = g.split(boxes, 1)
    half_w, half_h = g("Div", w, g.const(F32(2))), g("Div", h, g.const(F32(2)))
    corners = g(
        "Concat",
        g("Sub", cx, half_w),
        g("Sub", cy, half_h),
        g("Add", cx, half_w),
        g("Add", cy, half_h),
        axis=1,
    )
    selected = g(
        "NonMaxSuppression",
        g.unsqueeze(corners, 0),
        g("Unsqueeze", best, g.const([0, 1], I64)),
        g.const([2**31 - 1], I64),
        g.const([s.nms], F32),
    )
    keep = g("Gather", selected, g.const(2, I64), axis=1)
    kept_labels = g.unsqueeze(g("Add", g("Gather", labels, keep, axis=0), g.const(F32(1))), 1)
    kept_scores = g.unsqueeze(g("Gather", best, keep, axis=0), 1)
    kept = g("Gather", corners, keep, axis=0)
    zeros = g("Mul", kept_scores, g.const(F32(0)))
    rows = g("Concat", zeros, kept_labels, kept_scores, kept, axis=1)
    # the fork's placeholder: one [i, -1, ...] row per image, used when nothing is kept
    batch = g("Slice", g("Shape", like), g.const([0], I64), g.const([1], I64))
    last = g("Squeeze", batch, g.const([0], I64))
    image = g("Cast", g("Range", g.const(0, I64), last, g.const(1, I64)), to=1)
    size = g("Concat", batch, g.const([6], I64), axis=0)
    fill = g("Expand", g.const(np.full((1, 6), -1.0, F32)), size)
    placeholder = g("Concat", g.unsqueeze(image, 1), fill, axis=1)
    count = g("Slice", g("Shape", rows), g.const([0], I64), g.const([1], I64))
    length = g("Where", g("Greater", count, g.const([0], I64)), count, batch)
    both = g("Concat", rows, placeholder, axis=0)
    picked = g("Slice", both, g.const([0], I64), length, g.const([0], I64))
    g("Reshape", picked, g.const([1, 1, -1, 7], I64), out=out)


@register("Yolov3DetectionOutput", "onnx")
def _yolov3(node: Node, ctx: OnnxContext) -> OnnxOut:
    s = yolo_settings(node.param.yolov3_detection_output_param)
    g = _Graph(ctx)
    maps = zip(ctx.inputs, ctx.in_shapes)
    parts = [_decode(g, s, t, x, shape[3]) for t, (x, shape) in enumerate(maps)]
    columns = [g("Concat", *c, axis=0) if len(c) > 1 else c[0] for c in zip(*parts)]
    above = g("Greater", columns[1], g.const(F32(s.threshold)))
    boxes, scores, labels = (g.rows_where(v, above) for v in columns)
    _finish(g, s, boxes, scores, labels, ctx.inputs[-1], ctx.outputs[0])
    return OnnxOut(g.nodes, g.inits)


@register("YoloDetectionOutput", "onnx")
def _yolo2(node: Node, ctx: OnnxContext) -> OnnxOut:
    """v2: one candidate per box, the first most probable class of a softmax (ArgMax)."""
    s = yolo2_settings(node.param.yolo_detection_output_param)
    g = _Graph(ctx)
    maps = zip(ctx.inputs, ctx.in_shapes)
    parts = [_decode2(g, s, x, shape[3], ctx.opset) for x, shape in maps]
    columns = [g("Concat", *c, axis=0) if len(c) > 1 else c[0] for c in zip(*parts)]
    above = g("GreaterOrEqual", columns[1], g.const(F32(s.threshold)))
    boxes, score, label = (g.rows_where(c, above) for c in columns)
    _finish(g, s, boxes, score, label, ctx.inputs[0], ctx.outputs[0])
    return OnnxOut(g.nodes, g.inits)


def _decode2(g: _Graph, s: YoloSettings, x: str, side: int, opset: int) -> tuple[str, str, str]:
    """One v2 map: flat boxes, scores and labels, one candidate per box, loop order."""
    boxes, _, _ = _decode(g, s, 0, x, side, per_class=False)
    cells = side * side
    v = g("Reshape", x, g.const([-1, s.boxes, 5 + s.classes, cells], I64))
    v = g("Transpose", v, perm=[0, 3, 1, 2])
    logits = g("Slice", v, g.const([5], I64), g.const([5 + s.classes], I64), g.const([3], I64))
    prob = g("Softmax", logits, axis=3)
    best = (
        g("ReduceMax", prob, g.const([3], I64), keepdims=0)
        if opset >= 18
        else g("ReduceMax", prob, axes=[3], keepdims=0)
    )
    label = g("Cast", g("ArgMax", prob, axis=3, keepdims=0), to=1)
    objectness = g("Slice", v, g.const([4], I64), g.const([5], I64), g.const([3], I64))
    score = g("Mul", g("Sigmoid", g("Squeeze", objectness, g.const([3], I64))), best)
    flat = g.const([-1], I64)
    return boxes, g("Reshape", score, flat), g("Reshape", label, flat)
