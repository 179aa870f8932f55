"""ShuffleChannel, Reorg (darknet's), Transpose and Reverse as ONNX Reshape, Transpose and
Slice (shapes/rearrange.py; the index rules are in reference/rearrange.py's docstring)."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ...registry import register
from ...shapes.rearrange import (
    flip_axes,
    im2col_geometry,
    reorg_stride,
    reverse_axis,
    tile_dim,
    transpose_axes,
)
from ._base import OnnxContext, OnnxOut


def _reshape_permute_reshape(
    ctx: OnnxContext, first: list[int], perm: list[int], last: list[int]
) -> OnnxOut:
    """Reshape to ``first`` (0 keeps the batch), transpose by ``perm``, reshape to ``last``."""
    a, b = ctx.tensor("first", first, np.int64), ctx.tensor("last", last, np.int64)
    split, moved = ctx.name("split"), ctx.name("moved")
    nodes = [
        ctx.op("Reshape", [ctx.inputs[0], a.name], [split], "split"),
        ctx.op("Transpose", [split], [moved], "move", perm=perm),
        ctx.op("Reshape", [moved, b.name], ctx.outputs),
    ]
    return OnnxOut(nodes, [a, b])


@register("ShuffleChannel", "onnx")
def _shuffle_channel(node: Node, ctx: OnnxContext) -> OnnxOut:
    shape = ctx.in_shapes[0]
    group = int(node.param.shuffle_channel_param.group)
    c = shape[1]
    return _reshape_permute_reshape(ctx, [0, group, c // group, -1], [0, 2, 1, 3], [0, *shape[1:]])


@register("Reorg", "onnx")
def _reorg(node: Node, ctx: OnnxContext) -> OnnxOut:
    _, c, h, w = ctx.in_shapes[0]
    s = reorg_stride(node)
    first = [0, c // (s * s), h, s, w, s]
    return _reshape_permute_reshape(ctx, first, [0, 3, 5, 1, 2, 4], [0, c * s * s, h // s, w // s])


@register("Tiling", "onnx")
def _tiling(node: Node, ctx: OnnxContext) -> OnnxOut:
    """ONNX's DepthToSpace in CRD order, as a reshape, transpose and reshape."""
    _, c, h, w = ctx.in_shapes[0]
    t = tile_dim(node.param.tiling_param)
    first = [0, c // (t * t), t, t, h, w]
    return _reshape_permute_reshape(ctx, first, [0, 1, 4, 2, 5, 3], [0, c // (t * t), h * t, w * t])


@register("Transpose", "onnx")
def _transpose(node: Node, ctx: OnnxContext) -> OnnxOut:
    perm = transpose_axes(node, len(ctx.in_shapes[0]))
    return OnnxOut([ctx.op("Transpose", ctx.inputs, ctx.outputs, perm=perm)])


def _reversed(ctx: OnnxContext, axes: list[int]) -> OnnxOut:
    """A Slice with step -1 along each of ``axes`` (the identity when there are none)."""
    if not axes:
        return OnnxOut([ctx.op("Identity", ctx.inputs, ctx.outputs)])
    starts = ctx.tensor("starts", [-1] * len(axes), np.int64)
    ends = ctx.tensor("ends", [np.iinfo(np.int64).min] * len(axes), np.int64)
    axes_t = ctx.tensor("axes", axes, np.int64)
    steps = ctx.tensor("steps", [-1] * len(axes), np.int64)
    names = [ctx.inputs[0], starts.name, ends.name, axes_t.name, steps.name]
    return OnnxOut([ctx.op("Slice", names, ctx.outputs)], [starts, ends, axes_t, steps])


@register("Reverse", "onnx")
def _reverse(node: Node, ctx: OnnxContext) -> OnnxOut:
    return _reversed(ctx, [reverse_axis(node, len(ctx.in_shapes[0]))])


@register("Flip", "onnx")
def _flip(node: Node, ctx: OnnxContext) -> OnnxOut:
    return _reversed(ctx, list(flip_axes(node)))


@register("Im2col", "onnx")
def _im2col(node: Node, ctx: OnnxContext) -> OnnxOut:
    """Opset 17 has no unfold: a grouped convolution whose kernels are one-hot picks each tap
    (output channel ``(c * kh + i) * kw + j`` copies tap (i, j) of channel c, exactly)."""
    g = im2col_geometry(node)
    c = ctx.in_shapes[0][1]
    kh, kw = g.kernel
    weight = np.zeros((c * kh * kw, 1, kh, kw), np.float32)
    taps = np.arange(kh * kw)
    for channel in range(c):
        weight[channel * kh * kw + taps, 0, taps // kw, taps % kw] = 1.0
    w = ctx.tensor("one_hot", weight)
    attrs = {
        "group": c,
        "kernel_shape": [kh, kw],
        "strides": list(g.stride),
        "pads": [*g.pad, *g.pad],
        "dilations": list(g.dilation),
    }
    return OnnxOut([ctx.op("Conv", [ctx.inputs[0], w.name], ctx.outputs, **attrs)], [w])
