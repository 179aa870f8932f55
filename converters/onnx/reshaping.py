"""Layers that route, cut, reshape or repeat blobs: Split, Concat, Flatten, Slice, Reshape, Crop,
and Tile."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ...registry import register
from ...shapes.geometry import canonical_axis
from ...shapes.reshaping import (
    auto_crop_offsets,
    center_crop_sizes,
    crop_offsets,
    reshape_span,
    slice_sizes,
)
from ._base import OnnxContext, OnnxOut


@register("Split", "onnx")
def _split(node: Node, ctx: OnnxContext) -> OnnxOut:
    x = ctx.inputs[0]
    return OnnxOut(
        [ctx.op("Identity", [x], [out], f"copy{i}") for i, out in enumerate(ctx.outputs)]
    )


@register("Concat", "onnx")
def _concat(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.concat_param
    ndim = len(ctx.in_shapes[0])
    axis = int(p.concat_dim) if p.HasField("concat_dim") and not p.HasField("axis") else int(p.axis)
    return OnnxOut([ctx.op("Concat", ctx.inputs, ctx.outputs, axis=canonical_axis(axis, ndim))])


@register("Flatten", "onnx")
def _flatten(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.flatten_param
    shape = ctx.in_shapes[0]
    start = canonical_axis(int(p.axis), len(shape))
    end = canonical_axis(int(p.end_axis), len(shape))
    if start == 1 and end == len(shape) - 1:
        return OnnxOut([ctx.op("Flatten", ctx.inputs, ctx.outputs, axis=1)])
    target = ctx.tensor("shape", [0] * start + [-1] + list(shape[end + 1 :]), np.int64)
    return OnnxOut([ctx.op("Reshape", [ctx.inputs[0], target.name], ctx.outputs)], [target])


END = np.iinfo(np.int64).max


@register("Slice", "onnx")
def _slice(node: Node, ctx: OnnxContext) -> OnnxOut:
    axis, sizes = slice_sizes(node, ctx.in_shapes[0])
    x = ctx.inputs[0]
    if len(sizes) == 1:
        return OnnxOut([ctx.op("Identity", [x], ctx.outputs)])
    if not node.param.slice_param.slice_point:  # equal parts of whatever size the axis has
        return OnnxOut([ctx.op("Split", [x], ctx.outputs, axis=axis)])
    bounds = [0, *(int(p) for p in node.param.slice_param.slice_point), END]
    axes = ctx.tensor("axes", [axis], np.int64)
    nodes, inits = [], [axes]
    for i, (start, end, top) in enumerate(zip(bounds, bounds[1:], ctx.outputs)):
        starts, ends = (
            ctx.tensor(f"start{i}", [start], np.int64),
            ctx.tensor(f"end{i}", [end], np.int64),
        )
        nodes.append(ctx.op("Slice", [x, starts.name, ends.name, axes.name], [top], f"part{i}"))
        inits += [starts, ends]
    return OnnxOut(nodes, inits)


@register("Reshape", "onnx")
def _reshape(node: Node, ctx: OnnxContext) -> OnnxOut:
    shape, out = ctx.in_shapes[0], ctx.out_shapes[0]
    start, end = reshape_span(node, len(shape))
    dims = [int(d) for d in node.param.reshape_param.shape.dim]
    x, y = ctx.inputs[0], ctx.outputs[0]
    if end == 0 and not dims:  # nothing replaced, nothing inserted
        return OnnxOut([ctx.op("Identity", [x], [y])])
    if end == 0:  # new axes in front of the batch: append the input's own shape
        lead = ctx.tensor("lead", out[: len(dims)], np.int64)
        size, target = ctx.name("input_shape"), ctx.name("target")
        nodes = [
            ctx.op("Shape", [x], [size], "shape"),
            ctx.op("Concat", [lead.name, size], [target], "target", axis=0),
            ctx.op("Reshape", [x, target], [y]),
        ]
        return OnnxOut(nodes, [lead])
    # ONNX's 0 copies the input axis at the same index, as Caffe's does for axes before ``end``;
    # the batch is axis 0 and stays 0 (or is absorbed by -1), the other axes are fixed sizes.
    target = ctx.tensor("target", [0] * start + dims + list(shape[end:]), np.int64)
    return OnnxOut([ctx.op("Reshape", [x, target.name], [y])], [target])


@register("Crop", "onnx")
def _crop(node: Node, ctx: OnnxContext) -> OnnxOut:
    return _crop_like(ctx, *crop_offsets(node, ctx.in_shapes[0]))


@register("AutoCrop", "onnx")
def _auto_crop(node: Node, ctx: OnnxContext) -> OnnxOut:
    return _crop_like(ctx, 2, list(auto_crop_offsets(node)))


def _crop_like(ctx: OnnxContext, axis: int, offsets: list[int]) -> OnnxOut:
    """The first input from ``offsets`` on axes ``axis ..``, as large as the second input."""
    ndim = len(ctx.in_shapes[0])
    x, like = ctx.inputs
    starts = ctx.tensor("starts", offsets, np.int64)
    axes = ctx.tensor("axes", list(range(axis, ndim)), np.int64)
    first, last = ctx.tensor("first", [axis], np.int64), ctx.tensor("last", [ndim], np.int64)
    size, sizes, ends = ctx.name("like_shape"), ctx.name("sizes"), ctx.name("ends")
    nodes = [
        ctx.op("Shape", [like], [size], "like_shape"),
        ctx.op("Slice", [size, first.name, last.name], [sizes], "sizes"),
        ctx.op("Add", [sizes, starts.name], [ends], "ends"),
        ctx.op("Slice", [x, starts.name, ends, axes.name], ctx.outputs),
    ]
    return OnnxOut(nodes, [starts, axes, first, last])


@register("CropCenter", "onnx")
def _crop_center(node: Node, ctx: OnnxContext) -> OnnxOut:
    """One Slice from ``c`` to ``-c`` on each cropped axis (negative ends keep the batch free)."""
    sizes = center_crop_sizes(node, ctx.in_shapes[0])
    axes = [i for i, c in enumerate(sizes) if c]
    if not axes:
        return OnnxOut([ctx.op("Identity", ctx.inputs, ctx.outputs)])
    starts = ctx.tensor("starts", [sizes[i] for i in axes], np.int64)
    ends = ctx.tensor("ends", [-sizes[i] for i in axes], np.int64)
    axes_t = ctx.tensor("axes", axes, np.int64)
    inputs = [ctx.inputs[0], starts.name, ends.name, axes_t.name]
    return OnnxOut([ctx.op("Slice", inputs, ctx.outputs)], [starts, ends, axes_t])


@register("Tile", "onnx")
def _tile(node: Node, ctx: OnnxContext) -> OnnxOut:
    ndim, p = len(ctx.in_shapes[0]), node.param.tile_param
    axis = canonical_axis(int(p.axis), ndim)
    repeats = ctx.tensor(
        "repeats", [int(p.tiles) if i == axis else 1 for i in range(ndim)], np.int64
    )
    return OnnxOut([ctx.op("Tile", [ctx.inputs[0], repeats.name], ctx.outputs)], [repeats])
