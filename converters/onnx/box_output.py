"""BoxOutput in ONNX (MS-CNN; see caffe_compat.shapes.box_output), every image at once.

Each scale decodes with element-wise ops (static sizes); candidates of the whole batch are kept
by NonZero + Gather and ordered by one TopK on the reversed list (equal scores: the later one
first, as the fork). The per-image cut to ``max_nms_num`` ranks candidates within their image by
a cumulative sum of one-hot image columns; the per-image NMS is one ``NonMaxSuppression`` whose
classes are the images (a candidate scores -inf in every other image's class), with
``max_post_nms_num`` as its per-class limit. ONNX's NMS has only the IOU overlap: the fork's
IOMU and IOFU modes are refused by the converter's check. DecodeBBox: element-wise on the
columns of every row (the fork's TEST forward)."""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from ...ir.graph import Node
from ...registry import register
from ...shapes.box_output import BoxSettings, box_settings, decode_settings
from ._base import OnnxContext, OnnxOut
from .detection import _Graph

I64, F32 = np.int64, np.float32


def _modes(node: Node) -> str | None:
    """the IOMU and IOFU overlap modes (ONNX's NonMaxSuppression has IOU only)"""
    mode = node.param.box_output_param.nms_type
    return None if mode == "IOU" else f"nms_type {mode}: ONNX's NonMaxSuppression has IOU only"


def _decode(g: _Graph, s: BoxSettings, j: int, x: str, shape) -> list[str]:
    """(N, H * W) columns x1, y1, x2, y2, score and kept, for one scale."""
    _, c, height, width = shape
    k, cells = c - 4, height * width
    v = g("Reshape", x, g.const([0, c, cells], I64))

    def channel(a: int, b: int) -> str:
        return g("Slice", v, g.const([a], I64), g.const([b], I64), g.const([1], I64))

    def squeeze(t: str) -> str:
        return g("Squeeze", t, g.const([1], I64))

    background = squeeze(channel(0, 1))
    if k > 1:
        if g.ctx.opset >= 18:
            best = g("ReduceMax", channel(1, k), g.const([1], I64), keepdims=0)
        else:
            best = g("ReduceMax", channel(1, k), axes=[1], keepdims=0)
        fg = g("Sub", best, background)
    else:
        fg = g("Sub", g.const(F32(-math.inf)), background)
    bx, by, bw, bh = (squeeze(channel(k + a, k + a + 1)) for a in range(4))
    if s.mean is not None and s.std is not None:
        bx, by, bw, bh = (
            g("Add", g("Mul", t, g.const(F32(s.std[a]))), g.const(F32(s.mean[a])))
            for a, t in enumerate((bx, by, bw, bh))
        )
    cell = np.arange(cells)
    rate = s.rates[j]
    cols = g.const(((cell % width + 0.5) * rate).astype(F32)[None])
    rows = g.const(((cell // width + 0.5) * rate).astype(F32)[None])
    lo, hi = g.const(F32(-1 / s.xyr)), g.const(F32(1 / s.xyr))
    bx = g("Add", g("Mul", g("Min", g("Max", bx, lo), hi), g.const(F32(s.field_w[j]))), cols)
    by = g("Add", g("Mul", g("Min", g("Max", by, lo), hi), g.const(F32(s.field_h[j]))), rows)
    lo, hi = g.const(F32(math.log(1 / s.whr))), g.const(F32(math.log(s.whr)))
    bw = g("Mul", g("Exp", g("Min", g("Max", bw, lo), hi)), g.const(F32(s.field_w[j])))
    bh = g("Mul", g("Exp", g("Min", g("Max", bh, lo), hi)), g.const(F32(s.field_h[j])))
    zero = g.const(F32(0))
    bx = g("Max", g("Sub", bx, g("Div", bw, g.const(F32(2)))), zero)
    by = g("Max", g("Sub", by, g("Div", bh, g.const(F32(2)))), zero)
    bw = g("Min", bw, g("Sub", g.const(F32(width * rate)), bx))
    bh = g("Min", bh, g("Sub", g.const(F32(height * rate)), by))
    least = g.const(F32(s.min_size))
    keep = g(
        "And",
        g("GreaterOrEqual", fg, g.const(F32(s.fg_thr))),
        g("And", g("GreaterOrEqual", bw, least), g("GreaterOrEqual", bh, least)),
    )
    return [bx, by, g("Add", bx, bw), g("Add", by, bh), fg, keep]


@register("BoxOutput", "onnx", check=_modes)
def _box_output(node: Node, ctx: OnnxContext) -> OnnxOut:
    s = box_settings(node.param, len(ctx.inputs))
    g = _Graph(ctx)
    parts = [
        _decode(g, s, j, x, shape) for j, (x, shape) in enumerate(zip(ctx.inputs, ctx.in_shapes))
    ]
    columns = [g("Concat", *c, axis=1) if len(c) > 1 else c[0] for c in zip(*parts)]
    ones = g("Add", g("Mul", columns[4], g.const(F32(0))), g.const(F32(1)))
    image = g("Sub", g("CumSum", ones, g.const(0, I64)), g.const(F32(1)))  # (N, M)
    flat = g.const([-1], I64)
    *values, keep = [g("Reshape", c, flat) for c in (*columns[:5], image, columns[5])]
    values = [g.rows_where(v, keep) for v in values]
    # reversed, so that TopK (lower index first on ties) puts the later candidate first
    reverse = [g.const([-1], I64), g.const([-(2**62)], I64), g.const([0], I64), g.const([-1], I64)]
    x1, y1, x2, y2, score, image = (g("Slice", v, *reverse) for v in values)
    best, order = g("TopK", score, g("Shape", score), outputs=2, axis=0, largest=1, sorted=1)
    x1, y1, x2, y2, image = (g("Gather", v, order, axis=0) for v in (x1, y1, x2, y2, image))
    batch = g("Slice", g("Shape", ctx.inputs[0]), g.const([0], I64), g.const([1], I64))
    images = g(
        "Cast",
        g("Range", g.const(0, I64), g("Squeeze", batch, g.const([0], I64)), g.const(1, I64)),
        to=TensorProto.FLOAT,
    )
    member = g("Equal", g.unsqueeze(image, 1), g.unsqueeze(images, 0))  # (S, N)
    if s.max_nms > 0:
        rank = g("CumSum", g("Cast", member, to=TensorProto.FLOAT), g.const(0, I64))
        own = g(
            "ReduceSum",
            g("Mul", rank, g("Cast", member, to=TensorProto.FLOAT)),
            g.const([1], I64),
            keepdims=0,
        )
        early = g("LessOrEqual", own, g.const(F32(s.max_nms)))
        x1, y1, x2, y2, best, image = (
            g.rows_where(v, early) for v in (x1, y1, x2, y2, best, image)
        )
        member = g.rows_where(member, early)
    boxes = g("Concat", *(g.unsqueeze(v, 1) for v in (x1, y1, x2, y2)), axis=1)  # (S, 4)
    lowest = g.const(F32(-math.inf))
    per_image = g("Where", g("Transpose", member, perm=[1, 0]), g.unsqueeze(best, 0), lowest)
    selected = g(
        "NonMaxSuppression",
        g.unsqueeze(boxes, 0),
        g.unsqueeze(per_image, 0),
        g.const([s.max_post if s.max_post > 0 else 2**31 - 1], I64),
        g.const([s.iou_thr], F32),
        g.const([float(np.finfo(F32).min)], F32),
    )
    pick = g("Gather", selected, g.const(2, I64), axis=1)
    rows = g(
        "Concat",
        g.unsqueeze(g("Gather", image, pick, axis=0), 1),
        g("Gather", boxes, pick, axis=0),
        g.unsqueeze(g("Gather", best, pick, axis=0), 1),
        axis=1,
    )  # (R, 6)
    count = g("Slice", g("Shape", rows), g.const([0], I64), g.const([1], I64))
    length = g("Max", count, g.const([1], I64))  # the fork's dummy ROI when nothing is kept
    dummy = g.const(np.array([[0, 1, 1, 10, 10, 0]], F32))
    rois = g(
        "Slice", g("Concat", rows, dummy, axis=0), g.const([0], I64), length, g.const([0], I64)
    )
    rois = g("Slice", rois, g.const([0], I64), g.const([5], I64), g.const([1], I64))
    g("Reshape", rois, g.const([-1, 5, 1, 1], I64), out=ctx.outputs[0])
    if len(ctx.outputs) > 1:
        zeros = g.const(np.zeros((1, 6), F32))
        scored = g(
            "Slice", g("Concat", rows, zeros, axis=0), g.const([0], I64), length, g.const([0], I64)
        )
        g("Reshape", scored, g.const([-1, 6, 1, 1], I64), out=ctx.outputs[1])
    return OnnxOut(g.nodes, g.inits)


@register("DecodeBBox", "onnx")
def _decode_bbox(node: Node, ctx: OnnxContext) -> OnnxOut:
    mean, std = decode_settings(node.param)
    g = _Graph(ctx)
    offsets = g("Reshape", ctx.inputs[0], g.const([-1, 8], I64))
    rois = g("Reshape", ctx.inputs[1], g.const([-1, 5], I64))

    def column(x: str, a: int) -> str:
        return g("Slice", x, g.const([a], I64), g.const([a + 1], I64), g.const([1], I64))

    image, x1, y1, x2, y2 = (column(rois, a) for a in range(5))
    dx, dy, dw, dh = (
        g("Add", g("Mul", column(offsets, 4 + a), g.const(F32(std[a]))), g.const(F32(mean[a])))
        for a in range(4)
    )
    one, half = g.const(F32(1)), g.const(F32(0.5))
    pw, ph = g("Add", g("Sub", x2, x1), one), g("Add", g("Sub", y2, y1), one)
    tw, th = g("Mul", pw, g("Exp", dw)), g("Mul", ph, g("Exp", dh))

    def corner(d: str, p: str, low: str, high: str, t: str) -> str:
        centre = g("Add", g("Mul", d, p), g("Mul", g("Add", low, high), half))
        return g("Sub", centre, g("Mul", g("Sub", t, one), half))

    tx, ty = corner(dx, pw, x1, x2, tw), corner(dy, ph, y1, y2, th)
    ex, ey = g("Sub", g("Add", tx, tw), one), g("Sub", g("Add", ty, th), one)
    rows = g("Concat", image, tx, ty, ex, ey, axis=1)
    g("Reshape", rows, g.const([-1, 5, 1, 1], I64), out=ctx.outputs[0])
    return OnnxOut(g.nodes, g.inits)
