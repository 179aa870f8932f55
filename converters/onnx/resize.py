"""The forks' Upsample and Interp in ONNX (opset 17), as shapes/resize.py reads them: unpooling
as ScatterElements into a zero plane, nearest and bilinear as Resize."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...ir.graph import Node
from ...registry import register
from ...shapes.resize import nearest_scale, unpools
from ._base import OnnxContext, OnnxOut


def _batch_and_channels(ctx: OnnxContext, x: str, tail: list[int], suffix: str):
    """Nodes giving ``[N, C, *tail]`` for the dynamic batch of ``x``."""
    shape, head = ctx.name(f"{suffix}_shape"), ctx.name(f"{suffix}_head")
    out = ctx.name(suffix)
    start, stop = (
        ctx.tensor(f"{suffix}_start", [0], np.int64),
        ctx.tensor(f"{suffix}_stop", [2], np.int64),
    )
    rest = ctx.tensor(f"{suffix}_tail", tail, np.int64)
    nodes = [
        ctx.op("Shape", [x], [shape], f"{suffix}_shape"),
        ctx.op("Slice", [shape, start.name, stop.name], [head], f"{suffix}_head"),
        ctx.op("Concat", [head, rest.name], [out], suffix, axis=0),
    ]
    return nodes, [start, stop, rest], out


@register("Upsample", "onnx")
def _upsample(node: Node, ctx: OnnxContext) -> OnnxOut:
    x, y = ctx.inputs[0], ctx.outputs[0]
    if not unpools(node):
        s = float(nearest_scale(node))
        roi, scales = ctx.tensor("roi", []), ctx.tensor("scales", [1.0, 1.0, s, s])
        resize = ctx.op(
            "Resize",
            [x, roi.name, scales.name],
            [y],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
        return OnnxOut([resize], [roi, scales])
    h, w = ctx.out_shapes[0][2:]
    plane = h * w
    flat = ctx.tensor("flat", [0, 0, -1], np.int64)
    full = ctx.tensor("full", [0, 0, h, w], np.int64)
    spare, zero = ctx.tensor("spare", plane, np.int64), ctx.tensor("zero", 0, np.int64)
    starts, ends = ctx.tensor("starts", [0], np.int64), ctx.tensor("ends", [plane], np.int64)
    axis = ctx.tensor("axis", [2], np.int64)
    size_nodes, size_inits, size = _batch_and_channels(ctx, x, [plane + 1], "size")
    v = {
        k: ctx.name(k)
        for k in (
            "values",
            "mask",
            "index",
            "negative",
            "past",
            "outside",
            "target",
            "zeros",
            "top",
            "cut",
        )
    }
    nodes = [
        ctx.op("Reshape", [x, flat.name], [v["values"]], "values"),
        ctx.op("Reshape", [ctx.inputs[1], flat.name], [v["mask"]], "mask"),
        ctx.op("Cast", [v["mask"]], [v["index"]], "index", to=TensorProto.INT64),
        ctx.op("Less", [v["index"], zero.name], [v["negative"]], "negative"),
        ctx.op("GreaterOrEqual", [v["index"], spare.name], [v["past"]], "past"),
        ctx.op("Or", [v["negative"], v["past"]], [v["outside"]], "outside"),
        ctx.op("Where", [v["outside"], spare.name, v["index"]], [v["target"]], "target"),
        *size_nodes,
        ctx.op(
            "ConstantOfShape", [size], [v["zeros"]], "zeros", value=ctx.tensor("zero_value", [0.0])
        ),
        ctx.op(
            "ScatterElements", [v["zeros"], v["target"], v["values"]], [v["top"]], "scatter", axis=2
        ),
        ctx.op("Slice", [v["top"], starts.name, ends.name, axis.name], [v["cut"]], "cut"),
        ctx.op("Reshape", [v["cut"], full.name], [y]),
    ]
    return OnnxOut(nodes, [flat, full, spare, zero, starts, ends, axis, *size_inits])


@register("Interp", "onnx")
def _interp(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.interp_param
    x, y = ctx.inputs[0], ctx.outputs[0]
    _, _, h, w = ctx.in_shapes[0]
    begin, end = -int(p.pad_beg), -int(p.pad_end)
    out_h, out_w = ctx.out_shapes[0][2:]
    nodes, inits = [], []
    if begin or end:
        starts = ctx.tensor("crop_starts", [begin, begin], np.int64)
        ends = ctx.tensor("crop_ends", [h - end, w - end], np.int64)
        axes = ctx.tensor("crop_axes", [2, 3], np.int64)
        cropped = ctx.name("cropped")
        nodes.append(ctx.op("Slice", [x, starts.name, ends.name, axes.name], [cropped], "crop"))
        inits += [starts, ends, axes]
        x = cropped
    if (h - begin - end, w - begin - end) == (out_h, out_w):
        return OnnxOut([*nodes, ctx.op("Identity", [x], [y])], inits)
    size_nodes, size_inits, sizes = _batch_and_channels(ctx, x, [out_h, out_w], "sizes")
    # scales left out by name (""): an empty initializer is "given" to shape inference on a
    # model checked without its weight data, and Resize takes sizes or scales, not both.
    roi = ctx.tensor("roi", [])
    resize = ctx.op(
        "Resize",
        [x, roi.name, "", sizes],
        [y],
        mode="linear",
        coordinate_transformation_mode="align_corners",
    )
    return OnnxOut([*nodes, *size_nodes, resize], [*inits, *size_inits, roi])
