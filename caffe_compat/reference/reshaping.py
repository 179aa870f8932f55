"""Layers that move values without arithmetic: Split, Concat, Flatten, Slice, Reshape, Crop, Tile,
and Silence.

Flatten and Reshape only reinterpret the row-major data, so their top is the bottom reshaped to
the shape rule's answer; Tile repeats the whole block from ``axis`` on, ``tiles`` times. Backward
moves the diffs back the same way (Split and Tile add up the copies); Crop's second bottom, which
only gives the size, gets no diff; Silence's bottoms get zeros, as Caffe writes them.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.geometry import canonical_axis
from ..shapes.reshaping import auto_crop_offsets, center_crop_sizes, crop_offsets, slice_sizes
from ._base import Arrays, BackwardContext, Grads, LayerContext


@register("Split", "reference")
def _split(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return [inputs[0]] * len(node.outputs)  # tops share the bottom's data, as in Caffe


@register("Concat", "reference")
def _concat(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    p = node.param.concat_param
    if p.HasField("concat_dim") and not p.HasField("axis"):
        axis = int(p.concat_dim)  # legacy field, never negative
    else:
        axis = canonical_axis(int(p.axis), inputs[0].ndim)
    return [np.concatenate(inputs, axis=axis)]


@register(("Flatten", "Reshape"), "reference")
def _reshape(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return [inputs[0].reshape(ctx.out_shapes[0])]


@register("Slice", "reference")
def _slice(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    axis, sizes = slice_sizes(node, x.shape)
    return np.split(x, list(itertools.accumulate(sizes))[:-1], axis=axis)


@register("Crop", "reference")
def _crop(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    x, like = inputs
    axis, offsets = crop_offsets(node, x.shape)
    window = tuple(slice(offset, offset + size) for offset, size in zip(offsets, like.shape[axis:]))
    return [x[(slice(None),) * axis + window]]


def _center_window(node: Node, shape: tuple[int, ...]) -> tuple[slice, ...]:
    sizes = center_crop_sizes(node, shape)
    return tuple(slice(c, n - c) for c, n in zip(sizes, shape))


@register("CropCenter", "reference")
def _crop_center(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    return [x[_center_window(node, x.shape)]]


def _auto_crop_window(node: Node, like: tuple[int, ...]) -> tuple[slice, ...]:
    oh, ow = auto_crop_offsets(node)
    return np.s_[:, :, oh : oh + like[2], ow : ow + like[3]]


@register("AutoCrop", "reference")
def _auto_crop(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    x, like = inputs
    return [x[_auto_crop_window(node, like.shape)]]


@register("Tile", "reference")
def _tile(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.tile_param
    axis = canonical_axis(int(p.axis), x.ndim)
    reps = [1] * x.ndim
    reps[axis] = int(p.tiles)
    return [np.tile(x, reps)]


@register("Silence", "reference")
def _silence(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return []


# --- backward --------------------------------------------------------------------------------


@register("Silence", "reference_backward")
def _silence_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    return [np.zeros(x.shape) for x in inputs], []


@register("Split", "reference_backward")
def _split_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    total = np.zeros(inputs[0].shape)
    for g in top_diffs:
        total = total + g
    return [total], []


@register("Concat", "reference_backward")
def _concat_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    p = node.param.concat_param
    if p.HasField("concat_dim") and not p.HasField("axis"):
        axis = int(p.concat_dim)
    else:
        axis = canonical_axis(int(p.axis), inputs[0].ndim)
    edges = list(itertools.accumulate(x.shape[axis] for x in inputs))[:-1]
    return list(np.split(top_diffs[0], edges, axis=axis)), []


@register(("Flatten", "Reshape"), "reference_backward")
def _reshape_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    return [top_diffs[0].reshape(inputs[0].shape)], []


@register("Slice", "reference_backward")
def _slice_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    axis, _ = slice_sizes(node, inputs[0].shape)
    return [np.concatenate(top_diffs, axis=axis)], []


@register("Crop", "reference_backward")
def _crop_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    x, like = inputs
    axis, offsets = crop_offsets(node, x.shape)
    window = tuple(slice(offset, offset + size) for offset, size in zip(offsets, like.shape[axis:]))
    diff = np.zeros(x.shape)
    diff[(slice(None),) * axis + window] = top_diffs[0]
    return [diff, None], []


@register("CropCenter", "reference_backward")
def _crop_center_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    (x,) = inputs
    diff = np.zeros(x.shape)
    diff[_center_window(node, x.shape)] = top_diffs[0]
    return [diff], []


@register("AutoCrop", "reference_backward")
def _auto_crop_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    x, like = inputs
    diff = np.zeros(x.shape)
    diff[_auto_crop_window(node, like.shape)] = top_diffs[0]
    return [diff, None], []


@register("Tile", "reference_backward")
def _tile_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    (x,), (g,) = inputs, top_diffs
    axis = canonical_axis(int(node.param.tile_param.axis), x.ndim)
    tiles = int(node.param.tile_param.tiles)
    folded = g.reshape(*x.shape[:axis], tiles, *x.shape[axis:])
    return [folded.sum(axis=axis)], []
