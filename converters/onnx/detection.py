"""The SSD layers in ONNX: Permute as Transpose, Normalize with ReduceSumSquare, PriorBox as a
constant computed from the static shapes, and DetectionOutput computed inside the graph.

DetectionOutput (see converters/torch/detection_post.py for Caffe's algorithm) maps onto ONNX ops:
decoding is element-wise arithmetic; ``top_k`` is a TopK mask on the scores (TopK breaks ties
by the lower index, as Caffe's stable sort does); the per-class greedy NMS is NonMaxSuppression
with the confidence threshold (strict ``>``) and the IoU threshold (suppress when ``>``), fed
boxes with inverted corners replaced by an empty box so that they overlap nothing, as Caffe's
zero-size rule has it; ``keep_top_k`` is a TopK over all kept scores of an image; a second TopK
sorts the rows by label; NonZero + Gather drop the empty slots, and Caffe's placeholder rows are
added when no image has a detection. The top has Caffe's exact shape, 1 x 1 x R x 7, R dynamic.

What stays outside ONNX: an adaptive NMS threshold (``eta`` < 1 with ``nms_threshold`` > 0.5;
the threshold then changes after every kept box, which NonMaxSuppression cannot express). The
converter's check reports it; export the graph of ``split_detection_output`` (in
``caffe_compat.converters.torch.detection_post``) instead and finish with its ``detection_output``.

ONNX leaves the order in which NonMaxSuppression visits equal scores open; ONNX Runtime visits
the lower index first, as Caffe does (measured), so ties match there. Caffe's own keep_top_k cut
orders equal scores arbitrarily; here the lower class, then the lower prior, wins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.detection import (
    HAPPYNEAR_EPS,
    ROW,
    DetectionSettings,
    detection_settings,
    happynear_normalize,
    num_priors,
    permute_order,
    prior_boxes,
)
from ._base import OnnxContext, OnnxOut

CORNER = caffe_pb2.PriorBoxParameter.CORNER
CORNER_SIZE = caffe_pb2.PriorBoxParameter.CORNER_SIZE


class _Graph:
    """Appends nodes with generated value names under one layer's prefix."""

    def __init__(self, ctx: OnnxContext) -> None:
        self.ctx, self.nodes, self.inits, self.count = ctx, [], [], 0

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        self.count += 1
        tensor = self.ctx.tensor(f"c{self.count}", value, dtype)
        self.inits.append(tensor)
        return tensor.name

    def __call__(self, op: str, *inputs: str, outputs: int = 1, out: str | None = None, **attrs):
        self.count += 1
        names = [out] if out else [self.ctx.name(f"{op}{self.count}_{i}") for i in range(outputs)]
        self.nodes.append(self.ctx.op(op, inputs, names, f"{op}{self.count}", **attrs))
        return names[0] if outputs == 1 else names

    def split(self, x: str, axis: int) -> list[str]:
        """Four equal parts along ``axis`` (box coordinates)."""
        extra = {"num_outputs": 4} if self.ctx.opset >= 18 else {}
        return self("Split", x, outputs=4, axis=axis, **extra)

    def unsqueeze(self, x: str, axis: int) -> str:
        return self("Unsqueeze", x, self.const([axis], np.int64))

    def rows_where(self, x: str, mask: str) -> str:
        """The rows of ``x`` where the 1-D ``mask`` is true: ONNX's Compress on axis 0, spelled
        NonZero + Gather because OpenCV 5's ONNX importer has no Compress."""
        index = self("Reshape", self("NonZero", mask), self.const([-1], np.int64))
        return self("Gather", x, index, axis=0)

    def filled(self, like: str, value: float, dtype: int = TensorProto.FLOAT) -> str:
        """A tensor shaped like ``like`` (its Shape) full of ``value``."""
        fill = helper.make_tensor("value", dtype, [1], [value])
        return self("ConstantOfShape", self("Shape", like), value=fill)


@register("Permute", "onnx")
def _permute(node: Node, ctx: OnnxContext) -> OnnxOut:
    order = permute_order(node.param.permute_param, len(ctx.in_shapes[0]))
    return OnnxOut([ctx.op("Transpose", ctx.inputs, ctx.outputs, perm=list(order))])


def _happynear_normalize(node: Node, ctx: OnnxContext) -> OnnxOut:
    """happynear's: x over sqrt(sum_c x^2 + 1e-6) (or sum_c |x| + 1e-6) at each position; the
    bottom is first viewed as N x C x H x W, as the fork's Reshape makes its tops."""
    g = _Graph(ctx)
    x = ctx.inputs[0]
    rank = len(ctx.in_shapes[0])
    if rank < 4:
        x = g("Unsqueeze", x, g.const(list(range(rank, 4)), np.int64))
    axes = g.const([1], np.int64)
    if node.param.normalize_param.normalize_type == "L1":
        total = g("ReduceSum", g("Abs", x), axes, keepdims=1)
        norm_out = ctx.outputs[1] if len(ctx.outputs) == 2 else None
        norm = g("Add", total, g.const(np.float32(HAPPYNEAR_EPS)), out=norm_out)
    else:
        total = g("ReduceSum", g("Mul", x, x), axes, keepdims=1)
        eps = g("Add", total, g.const(np.float32(HAPPYNEAR_EPS)))
        norm = g("Sqrt", eps, out=ctx.outputs[1] if len(ctx.outputs) == 2 else None)
    g("Div", x, norm, out=ctx.outputs[0])
    return OnnxOut(g.nodes, g.inits)


@register("Normalize", "onnx")
def _normalize(node: Node, ctx: OnnxContext) -> OnnxOut:
    if happynear_normalize(node.param):
        return _happynear_normalize(node, ctx)
    require_weights(node)
    p = node.param.norm_param
    rank = len(ctx.in_shapes[0])
    g = _Graph(ctx)
    x = ctx.inputs[0]
    axes = list(range(1, rank)) if p.across_spatial else [1]
    if ctx.opset >= 18:
        squares = g("ReduceSumSquare", x, g.const(axes, np.int64), keepdims=1)
    else:
        squares = g("ReduceSumSquare", x, axes=axes, keepdims=1)
    norm = g("Sqrt", g("Add", squares, g.const(np.float32(p.eps))))
    # Caffe multiplies by the reciprocal across the sample and divides per position.
    y = g("Mul", x, g("Reciprocal", norm)) if p.across_spatial else g("Div", x, norm)
    scale = node.blobs[0].astype(np.float32)
    if scale.ndim:
        scale = scale.reshape(1, -1, *(1,) * (rank - 2))
    g("Mul", y, g.const(scale), out=ctx.outputs[0])
    return OnnxOut(g.nodes, g.inits)


@register("PriorBox", "onnx")
def _prior_box(node: Node, ctx: OnnxContext) -> OnnxOut:
    boxes = ctx.tensor("priors", prior_boxes(node.param.prior_box_param, ctx.in_shapes))
    return OnnxOut([ctx.op("Constant", [], ctx.outputs, value=boxes)])


def _decode(g: _Graph, loc: str, prior: str, s: DetectionSettings, priors: int) -> str:
    """(B, L, P, 4) boxes from the loc bottom and the prior blob, with Caffe's float32 formulas."""
    offsets = g("Reshape", loc, g.const([-1, priors, s.num_loc_classes, 4], np.int64))
    offsets = g("Transpose", offsets, perm=[0, 2, 1, 3])
    flat = g("Reshape", prior, g.const([-1], np.int64))
    shape = g.const([priors, 4], np.int64)

    def part(start: int) -> str:
        ends = g.const([start + priors * 4], np.int64)
        return g("Reshape", g("Slice", flat, g.const([start], np.int64), ends), shape)

    boxes = part(0)
    if not s.variance_encoded_in_target:
        offsets = g("Mul", offsets, part(priors * 4))
    if s.code_type == CORNER:
        return g("Add", boxes, offsets)
    x1, y1, x2, y2 = g.split(boxes, 1)
    width, height = g("Sub", x2, x1), g("Sub", y2, y1)
    if s.code_type == CORNER_SIZE:
        size = g("Concat", width, height, width, height, axis=1)
        return g("Add", boxes, g("Mul", offsets, size))
    half = g.const(np.float32(0.5))
    dx, dy, dw, dh = g.split(offsets, 3)
    cx = g("Add", g("Mul", dx, width), g("Mul", g("Add", x1, x2), half))
    cy = g("Add", g("Mul", dy, height), g("Mul", g("Add", y1, y2), half))
    hw = g("Mul", g("Mul", g("Exp", dw), width), half)
    hh = g("Mul", g("Mul", g("Exp", dh), height), half)
    corners = [g("Sub", cx, hw), g("Sub", cy, hh), g("Add", cx, hw), g("Add", cy, hh)]
    return g("Concat", *corners, axis=3)


def _placeholders(g: _Graph, ids: str, batch: str) -> str:
    """Caffe's "no detection" rows: [i, -1, -1, -1, -1, -1, -1] for every image i."""
    minus = g(
        "Expand",
        g.const(np.full((1, ROW - 1), -1.0)),
        g("Concat", batch, g.const([ROW - 1], np.int64), axis=0),
    )
    return g("Concat", g.unsqueeze(ids, 1), minus, axis=1)


def _check(node: Node) -> str | None:
    try:
        s = detection_settings(node.param.detection_output_param)
    except ValueError:
        return None  # the shape rule reports invalid settings
    if s.adaptive:
        return (
            f"eta {s.eta:g} < 1 with nms_threshold {s.nms_threshold:g} > 0.5 changes the NMS "
            "threshold after every kept box, which ONNX NonMaxSuppression cannot do; export "
            "split_detection_output(graph) and finish with detection_output (both in "
            "caffe_compat.converters.torch.detection_post)"
        )
    return None


@register("DetectionOutput", "onnx", check=_check)
def _detection_output(node: Node, ctx: OnnxContext) -> OnnxOut:
    s = detection_settings(node.param.detection_output_param)
    loc, conf, prior = ctx.inputs[:3]
    priors = num_priors(ctx.in_shapes[2])
    fg = s.foreground
    g = _Graph(ctx)
    batch = g("Slice", g("Shape", loc), g.const([0], np.int64), g.const([1], np.int64))
    ids = g(
        "Cast",
        g("Range", g.const(0, np.int64), g("Squeeze", batch), g.const(1, np.int64)),
        to=TensorProto.FLOAT,
    )
    final = g.const([1, 1, -1, ROW], np.int64)
    if s.never_detects:
        g("Reshape", _placeholders(g, ids, batch), final, out=ctx.outputs[0])
        return OnnxOut(g.nodes, g.inits)

    boxes = _decode(g, loc, prior, s, priors)  # (B, L, P, 4)
    x1, y1, x2, y2 = g.split(boxes, 3)
    inverted = g("Or", g("Less", x2, x1), g("Less", y2, y1))
    empty_box = g("Where", inverted, g.const(np.float32(0)), boxes)  # overlaps nothing
    fg_index = g.const(fg, np.int64)
    if s.share_location:
        per_class = g("Expand", empty_box, g.const([1, len(fg), 1, 1], np.int64))
    else:
        per_class = g("Gather", empty_box, fg_index, axis=1)
    # NonMaxSuppression reads [y1, x1, y2, x2]; IoU is symmetric in x and y, so x-first is fine.
    nms_boxes = g("Reshape", per_class, g.const([-1, priors, 4], np.int64))
    scores = g("Reshape", conf, g.const([-1, priors, s.num_classes], np.int64))
    scores = g("Transpose", scores, perm=[0, 2, 1])
    if len(fg) < s.num_classes:
        scores = g("Gather", scores, fg_index, axis=1)
    scores = g("Reshape", scores, g.const([-1, 1, priors], np.int64))  # (B * classes, 1, P)
    lowest = g.const(np.float32(-np.inf))
    if 0 <= s.top_k < priors:
        _, best = g("TopK", scores, g.const([s.top_k], np.int64), outputs=2, axis=2)
        mask = g("ScatterElements", g.filled(scores, 0.0), best, g.filled(best, 1.0), axis=2)
        scores = g("Where", g("Cast", mask, to=TensorProto.BOOL), scores, lowest)
    selected = g(
        "NonMaxSuppression",
        nms_boxes,
        scores,
        g.const([priors], np.int64),
        g.const([s.nms_threshold]),
        g.const([s.confidence_threshold]),
    )
    kept = g("ScatterND", g.filled(scores, -np.inf), selected, g("GatherND", scores, selected))
    kept = g("Reshape", kept, g.const([-1, len(fg) * priors], np.int64))

    width = len(fg) * priors if s.keep_top_k < 0 else min(s.keep_top_k, len(fg) * priors)
    value, index = g("TopK", kept, g.const([width], np.int64), outputs=2, axis=1)
    cls = g("Div", index, g.const(priors, np.int64))
    box_index = g("Mod", index, g.const(priors, np.int64))
    # Caffe's row order: by label, then by score (the position in the TopK result).
    rank = g("Range", g.const(0, np.int64), g.const(width, np.int64), g.const(1, np.int64))
    key = g("Add", g("Mul", cls, g.const(width, np.int64)), rank)
    _, perm = g("TopK", key, g.const([width], np.int64), outputs=2, axis=1, largest=0)
    value = g("GatherElements", value, perm, axis=1)
    cls = g("GatherElements", cls, perm, axis=1)
    box_index = g("GatherElements", box_index, perm, axis=1)
    if s.share_location:
        table = g("Reshape", boxes, g.const([-1, priors, 4], np.int64))
    else:
        table = g("Reshape", boxes, g.const([-1, s.num_classes * priors, 4], np.int64))
        label_id = g("Gather", fg_index, cls)
        box_index = g("Add", g("Mul", label_id, g.const(priors, np.int64)), box_index)
    picked = g("GatherND", table, g.unsqueeze(box_index, 2), batch_dims=1)  # (B, width, 4)
    label = g("Gather", g.const(np.array(fg, np.float32)), cls)
    image = g("Expand", g.unsqueeze(ids, 1), g("Shape", value))
    columns = [g.unsqueeze(image, 2), g.unsqueeze(label, 2), g.unsqueeze(value, 2), picked]
    rows = g("Reshape", g("Concat", *columns, axis=2), g.const([-1, ROW], np.int64))
    real = g("Reshape", g("Greater", value, lowest), g.const([-1], np.int64))
    found = g.rows_where(rows, real)
    none = g(
        "Equal",
        g("ReduceSum", g("Cast", real, to=TensorProto.INT64), keepdims=0),
        g.const(0, np.int64),
    )
    fallback = g.rows_where(_placeholders(g, ids, batch), g("Expand", none, batch))
    g("Reshape", g("Concat", found, fallback, axis=0), final, out=ctx.outputs[0])
    return OnnxOut(g.nodes, g.inits)
