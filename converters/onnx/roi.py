"""ROIPooling and PSROIPooling in ONNX.

ROIPooling is ONNX's ``MaxRoiPool`` (MS-CNN's ``pad_ratio`` widens the ROIs first), whose
definition is caffe-fast-rcnn's (corners rounded after the scale, spans of at least one cell,
floor/ceil bins, empty bins 0): ONNX Runtime's kernel matches the float64 reference
(tests/converters/test_roi.py).

PSROIPooling has no ONNX operator. It is built from a float64 integral image of the feature map
(``CumSum`` over rows and columns, a zero row and column in front): each bin's sum is four
gathered corners of its channel, ``S[h1, w1] - S[h0, w1] - S[h1, w0] + S[h0, w0]``, so the
scratch is the integral image plus four values per output cell, whatever the ROI count. The bins
use R-FCN's float32 arithmetic, C's round being ``sign(v) * floor(|v| + 0.5)`` (ONNX's Round
rounds halves to even).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...ir.graph import Node
from ...registry import register
from ...shapes.roi import psroi_settings, roi_pad_ratio, roi_pooling_settings
from ._base import OnnxContext, OnnxOut
from .detection import _Graph


@register("ROIPooling", "onnx")
def _roi_pooling(node: Node, ctx: OnnxContext) -> OnnxOut:
    ph, pw, scale = roi_pooling_settings(node.param.roi_pooling_param)
    ratio = roi_pad_ratio(node.param.roi_pooling_param)
    g = _Graph(ctx)
    rois = g("Reshape", ctx.inputs[1], g.const([-1, 5], np.int64))
    if ratio:
        rois = _padded(g, rois, ratio)
    g(
        "MaxRoiPool",
        ctx.inputs[0],
        rois,
        out=ctx.outputs[0],
        pooled_shape=[ph, pw],
        spatial_scale=scale,
    )
    return OnnxOut(g.nodes, g.inits)


def _padded(g: _Graph, rois: str, ratio: float) -> str:
    """MS-CNN's ``pad_ratio`` (``caffe_compat.shapes.roi.padded_rois``): ``[b, x1 - pw, y1 - ph,
    x2 + pw, y2 + ph]`` with ``pw = (x2 - x1 + 1) * ratio``, in float32 steps, as one
    (R, 5) product: the size of each ROI times a sign pattern, added."""
    low = g("Gather", rois, g.const([1, 2], np.int64), axis=1)  # (R, 2): x1, y1
    high = g("Gather", rois, g.const([3, 4], np.int64), axis=1)
    pad = g(
        "Mul", g("Add", g("Sub", high, low), g.const(np.float32(1))), g.const(np.float32(ratio))
    )
    zero = g("Gather", pad, g.const([0], np.int64), axis=1)
    signed = g("Concat", g("Mul", zero, g.const(np.float32(0))), g("Neg", pad), pad, axis=1)
    return g("Add", rois, signed)


def _c_round(g: _Graph, x: str) -> str:
    return g("Mul", g("Sign", x), g("Floor", g("Add", g("Abs", x), g.const(np.float32(0.5)))))


def _edges(g: _Graph, rois: str, first: int, group: int, scale: float, limit: int):
    """(low, high) int64 (R, group) bin edges on one axis (first: the ROI column of its start)."""
    start_v = _c_round(g, g("Gather", rois, g.const(first, np.int64), axis=1))
    end_v = _c_round(g, g("Gather", rois, g.const(first + 2, np.int64), axis=1))
    scale32 = g.const(np.float32(scale))
    start = g("Mul", start_v, scale32)  # float32 product, as R-FCN's
    end64 = g(
        "Mul",
        g("Cast", g("Add", end_v, g.const(np.float32(1))), to=TensorProto.DOUBLE),
        g.const(scale, np.float64),
    )
    end = g("Cast", end64, to=TensorProto.FLOAT)
    extent64 = g(
        "Sub", g("Cast", end, to=TensorProto.DOUBLE), g("Cast", start, to=TensorProto.DOUBLE)
    )
    extent = g("Cast", g("Max", extent64, g.const(0.1, np.float64)), to=TensorProto.FLOAT)
    step = g("Div", extent, g.const(np.float32(group)))
    p = g.const(np.arange(group, dtype=np.float32)[None])
    step_c, start_c = g.unsqueeze(step, 1), g.unsqueeze(start, 1)
    low = g("Floor", g("Add", g("Mul", p, step_c), start_c))
    high = g("Ceil", g("Add", g("Mul", g("Add", p, g.const(np.float32(1))), step_c), start_c))
    zero, top = g.const(np.float32(0)), g.const(np.float32(limit))
    low = g("Cast", g("Min", g("Max", low, zero), top), to=TensorProto.INT64)
    high = g("Cast", g("Min", g("Max", high, zero), top), to=TensorProto.INT64)
    return low, high


@register("PSROIPooling", "onnx")
def _psroi_pooling(node: Node, ctx: OnnxContext) -> OnnxOut:
    dim, group, scale = psroi_settings(node.param.psroi_pooling_param)
    _, c, h, w = ctx.in_shapes[0]
    g = _Graph(ctx)
    rois = g("Reshape", ctx.inputs[1], g.const([-1, 5], np.int64))
    x64 = g("Cast", ctx.inputs[0], to=TensorProto.DOUBLE)
    pads = g.const([0, 0, 1, 1, 0, 0, 0, 0], np.int64)
    padded = g("Pad", x64, pads)  # a zero row and column in front
    integral = g("CumSum", g("CumSum", padded, g.const(2, np.int64)), g.const(3, np.int64))
    flat = g("Reshape", integral, g.const([-1], np.int64))
    image = g("Cast", g("Gather", rois, g.const(0, np.int64), axis=1), to=TensorProto.INT64)
    h0, h1 = _edges(g, rois, 2, group, scale, h)  # (R, g)
    w0, w1 = _edges(g, rois, 1, group, scale, w)
    # channel of top (r, k, i, j): (k * g + i) * g + j, a constant (dim, g, g)
    channel = np.arange(dim * group * group, dtype=np.int64).reshape(1, dim, group, group)
    base = g("Mul", g("Unsqueeze", image, g.const([1, 2, 3], np.int64)), g.const(c, np.int64))
    plane = g(
        "Mul", g("Add", base, g.const(channel, np.int64)), g.const((h + 1) * (w + 1), np.int64)
    )

    def rows(y: str) -> str:  # (R, 1, g, 1) row offsets
        return g("Mul", g("Unsqueeze", y, g.const([1, 3], np.int64)), g.const(w + 1, np.int64))

    def cols(x: str) -> str:  # (R, 1, 1, g)
        return g("Unsqueeze", x, g.const([1, 2], np.int64))

    def corner(y: str, x: str) -> str:
        return g("Gather", flat, g("Add", plane, g("Add", rows(y), cols(x))), axis=0)

    total = g(
        "Sub", g("Add", corner(h1, w1), corner(h0, w0)), g("Add", corner(h0, w1), corner(h1, w0))
    )
    area = g(
        "Mul",
        g("Unsqueeze", g("Sub", h1, h0), g.const([2], np.int64)),
        g("Unsqueeze", g("Sub", w1, w0), g.const([1], np.int64)),
    )  # (R, g, g)
    area = g("Cast", g("Unsqueeze", area, g.const([1], np.int64)), to=TensorProto.DOUBLE)
    positive = g("Greater", area, g.const(0, np.float64))
    safe = g("Max", area, g.const(1, np.float64))
    mean = g("Where", positive, g("Div", total, safe), g.const(0, np.float64))
    g("Cast", mean, to=TensorProto.FLOAT, out=ctx.outputs[0])
    return OnnxOut(g.nodes, g.inits)
