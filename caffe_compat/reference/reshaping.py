"""Layers that move values without arithmetic: Split, Concat, Flatten, Slice, Reshape, Crop, Tile.

Flatten and Reshape only reinterpret the row-major data, so their top is the bottom reshaped to
the shape rule's answer; Tile repeats the whole block from ``axis`` on, ``tiles`` times.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.geometry import canonical_axis
from ..shapes.reshaping import crop_offsets, slice_sizes
from ._base import LayerContext

Arrays = list[np.ndarray]


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


@register("Tile", "reference")
def _tile(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.tile_param
    axis = canonical_axis(int(p.axis), x.ndim)
    reps = [1] * x.ndim
    reps[axis] = int(p.tiles)
    return [np.tile(x, reps)]
