"""BoxOutput in ONNX (MS-CNN; see caffe_compat.shapes.box_output), every image at once.

Each scale decodes with element-wise ops (static sizes); candidates of the whole batch are kept
by NonZero + Gather and ordered by one TopK on the reversed list (equal scores: the later one
first, as the fork). The per-image cut to ``max_nms_num`` ranks candidates within their image by
a cumulative sum of one-hot image columns; the per-image NMS is one ``NonMaxSuppression`` whose
classes are the images (a candidate scores -inf in every other image's class), with
``max_post_nms_num`` as its per-class limit. ONNX's NMS has only the IOU overlap: the fork's
IOMU and IOFU modes are refused by the converter's check. DecodeBBox: element-wise on the
columns of every row (the fork's TEST forward). BoxGroupOutput (Cascade R-CNN): each pair's
fields and positions decoded element-wise into the same per-image columns, then the same tail
with TopK's earlier-first ties and the NMS fed corners moved by +1 (the fork's +1 overlap)."""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from ...ir.graph import Node
from ...registry import register
from ...shapes.box_output import (
    BoxSettings,
    GroupSettings,
    box_settings,
    decode_settings,
    group_settings,
)
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
    _proposals(g, ctx.inputs[0], parts, s.max_nms, s.max_post, s.iou_thr, later_first=True)
    return OnnxOut(g.nodes, g.inits)


def _proposals(
    g: _Graph,
    first: str,
    parts: list[list[str]],
    max_nms: int,
    max_post: int,
    iou_thr: float,
    later_first: bool,
    plus_one: bool = False,
) -> None:
    """The tops from per-map ``(N, M)`` columns x1, y1, x2, y2, score, kept: per image, the
    best ``max_nms`` (equal scores: the later or the earlier candidate first), IOU NMS (on
    corners moved by +1 for the +1 overlap), the first ``max_post``; the dummy ROI if none."""
    ctx = g.ctx
    columns = [g("Concat", *c, axis=1) if len(c) > 1 else c[0] for c in zip(*parts)]
    ones = g("Add", g("Mul", columns[4], g.const(F32(0))), g.const(F32(1)))
    image = g("Sub", g("CumSum", ones, g.const(0, I64)), g.const(F32(1)))  # (N, M)
    flat = g.const([-1], I64)
    *values, keep = [g("Reshape", c, flat) for c in (*columns[:5], image, columns[5])]
    values = [g.rows_where(v, keep) for v in values]
    if later_first:
        # reversed, so that TopK (lower index first on ties) puts the later candidate first
        back = [g.const([-1], I64), g.const([-(2**62)], I64), g.const([0], I64), g.const([-1], I64)]
        values = [g("Slice", v, *back) for v in values]
    x1, y1, x2, y2, score, image = values
    best, order = g("TopK", score, g("Shape", score), outputs=2, axis=0, largest=1, sorted=1)
    x1, y1, x2, y2, image = (g("Gather", v, order, axis=0) for v in (x1, y1, x2, y2, image))
    batch = g("Slice", g("Shape", first), g.const([0], I64), g.const([1], I64))
    images = g(
        "Cast",
        g("Range", g.const(0, I64), g("Squeeze", batch, g.const([0], I64)), g.const(1, I64)),
        to=TensorProto.FLOAT,
    )
    member = g("Equal", g.unsqueeze(image, 1), g.unsqueeze(images, 0))  # (S, N)
    if max_nms > 0:
        rank = g("CumSum", g("Cast", member, to=TensorProto.FLOAT), g.const(0, I64))
        own = g(
            "ReduceSum",
            g("Mul", rank, g("Cast", member, to=TensorProto.FLOAT)),
            g.const([1], I64),
            keepdims=0,
        )
        early = g("LessOrEqual", own, g.const(F32(max_nms)))
        x1, y1, x2, y2, best, image = (
            g.rows_where(v, early) for v in (x1, y1, x2, y2, best, image)
        )
        member = g.rows_where(member, early)
    boxes = g("Concat", *(g.unsqueeze(v, 1) for v in (x1, y1, x2, y2)), axis=1)  # (S, 4)
    lowest = g.const(F32(-math.inf))
    # NonMaxSuppression sorts by score again, equal scores in its own order: it is fed the
    # candidates' ranks (S .. 1) instead, so it visits them in the order set above
    count = g("Squeeze", g("Shape", best), g.const([0], I64))
    rank = g("Cast", g("Range", count, g.const(0, I64), g.const(-1, I64)), to=TensorProto.FLOAT)
    per_image = g("Where", g("Transpose", member, perm=[1, 0]), g.unsqueeze(rank, 0), lowest)
    moved = g("Add", boxes, g.const(np.array([0, 0, 1, 1], F32))) if plus_one else boxes
    selected = g(
        "NonMaxSuppression",
        g.unsqueeze(moved, 0),
        g.unsqueeze(per_image, 0),
        g.const([max_post if max_post > 0 else 2**31 - 1], I64),
        g.const([iou_thr], F32),
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


def _group_modes(node: Node) -> str | None:
    """the IOMU and IOFU overlap modes (ONNX's NonMaxSuppression has IOU only)"""
    mode = node.param.box_group_output_param.nms_type
    return None if mode == "IOU" else f"nms_type {mode}: ONNX's NonMaxSuppression has IOU only"


def _decode_group(g: _Graph, s: GroupSettings, j: int, prob: str, box: str, shape) -> list[str]:
    """(N, G * H * W) columns x1, y1, x2, y2, score and kept, for one pair of maps."""
    (fw, fh), stride = s.fields[j], s.strides[j]
    groups, (height, width) = len(fw), shape[2:]
    cells = height * width
    flat = g.const([-1, groups * cells], I64)
    first = g("Slice", prob, g.const([0], I64), g.const([1], I64), g.const([1], I64))
    score = g("Sub", g.const(F32(1)), g("Reshape", first, flat))
    d = g("Reshape", box, g.const([-1, groups, 4, cells], I64))

    def offset(a: int) -> str:
        part = g("Slice", d, g.const([a], I64), g.const([a + 1], I64), g.const([2], I64))
        scaled = g("Mul", g("Reshape", part, flat), g.const(F32(s.std[a])))
        return g("Add", scaled, g.const(F32(s.mean[a])))

    def clamp(x: str, low: float, high: float) -> str:
        return g("Min", g("Max", x, g.const(F32(low))), g.const(F32(high)))

    dx, dy = (clamp(offset(a), -s.xy, s.xy) for a in (0, 1))
    dw, dh = (clamp(offset(a), *s.wh) for a in (2, 3))
    cell = np.tile(np.arange(cells), groups)
    cols = g.const(((cell % width + 0.5) * stride).astype(F32)[None])
    rows = g.const(((cell // width + 0.5) * stride).astype(F32)[None])
    fw_ = g.const(np.repeat(np.array(fw, F32), cells)[None])
    fh_ = g.const(np.repeat(np.array(fh, F32), cells)[None])
    bw, bh = g("Mul", fw_, g("Exp", dw)), g("Mul", fh_, g("Exp", dh))
    half, one = g.const(F32(0.5)), g.const(F32(1))
    x1 = g("Sub", g("Add", g("Mul", dx, fw_), cols), g("Mul", bw, half))
    y1 = g("Sub", g("Add", g("Mul", dy, fh_), rows), g("Mul", bh, half))
    x2, y2 = g("Sub", g("Add", x1, bw), one), g("Sub", g("Add", y1, bh), one)
    zero = g.const(F32(0))
    x1, y1 = g("Max", x1, zero), g("Max", y1, zero)
    x2 = g("Min", x2, g.const(F32(width * stride)))
    y2 = g("Min", y2, g.const(F32(height * stride)))
    least = g.const(F32(s.min_size))

    def size(low: str, high: str) -> str:
        return g("GreaterOrEqual", g("Add", g("Sub", high, low), one), least)

    keep = g(
        "And",
        g("GreaterOrEqual", score, g.const(F32(s.fg_thr))),
        g("And", size(x1, x2), size(y1, y2)),
    )
    return [x1, y1, x2, y2, score, keep]


@register("BoxGroupOutput", "onnx", check=_group_modes)
def _box_group_output(node: Node, ctx: OnnxContext) -> OnnxOut:
    s = group_settings(node.param)
    g = _Graph(ctx)
    pairs = zip(ctx.inputs[::2], ctx.inputs[1::2], ctx.in_shapes[::2])
    parts = [_decode_group(g, s, j, prob, box, shape) for j, (prob, box, shape) in enumerate(pairs)]
    images = parts[0][4]  # the first pair's (N, M) scores: one row per image
    _proposals(g, images, parts, s.max_nms, s.max_post, s.iou_thr, later_first=False, plus_one=True)
    return OnnxOut(g.nodes, g.inits)
