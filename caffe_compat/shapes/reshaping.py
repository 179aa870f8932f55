"""Shape rules for the layers that route, cut, reshape or repeat blobs: Split, Concat, Flatten,
Slice, Reshape, Crop, Tile, and Silence (which only consumes blobs)."""

from __future__ import annotations

import itertools
import math

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from .geometry import canonical_axis


@register("Flatten", "shape")
def _flatten(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.flatten_param
    start = canonical_axis(int(p.axis), len(shape))
    end = canonical_axis(int(p.end_axis), len(shape), "end_axis")
    if end < start:
        raise ValueError(f"end_axis {p.end_axis} comes before axis {p.axis}")
    flat = math.prod(shape[start : end + 1])
    return LayerShapes([(*shape[:start], flat, *shape[end + 1 :])], [])


@register("Concat", "shape")
def _concat(node: Node, inputs: list[Shape]) -> LayerShapes:
    p = node.param.concat_param
    first = inputs[0]
    if p.HasField("concat_dim") and not p.HasField("axis"):
        axis = int(p.concat_dim)
        if axis >= len(first):
            raise ValueError(f"concat_dim {axis} is out of range for a {len(first)}-D blob")
    else:
        axis = canonical_axis(int(p.axis), len(first))
    for other in inputs[1:]:
        if len(other) != len(first) or any(
            a != b for i, (a, b) in enumerate(zip(first, other)) if i != axis
        ):
            raise ValueError(f"bottoms {list(first)} and {list(other)} differ off axis {axis}")
    total = sum(s[axis] for s in inputs)
    return LayerShapes([(*first[:axis], total, *first[axis + 1 :])], [])


@register("Split", "shape")
def _split(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    return LayerShapes([shape] * len(node.outputs), [])


def slice_axis(node: Node, ndim: int) -> int:
    """``axis``, or the legacy ``slice_dim`` (never both, never negative)."""
    p = node.param.slice_param
    if p.HasField("slice_dim"):
        if p.HasField("axis"):
            raise ValueError("give axis or slice_dim, not both")
        if p.slice_dim >= ndim:
            raise ValueError(f"slice_dim {p.slice_dim} is out of range for a {ndim}-D blob")
        return int(p.slice_dim)
    return canonical_axis(int(p.axis), ndim)


def slice_sizes(node: Node, shape: Shape) -> tuple[int, list[int]]:
    """The slice axis and each top's extent along it."""
    axis = slice_axis(node, len(shape))
    points, tops, size = list(node.param.slice_param.slice_point), len(node.outputs), shape[axis]
    if not points:
        if size % tops:
            raise ValueError(f"{tops} tops do not divide axis {axis} of size {size} evenly")
        return axis, [size // tops] * tops
    if len(points) != tops - 1:
        raise ValueError(f"{len(points)} slice points for {tops} tops")
    bounds = [0, *points, size]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    if any(s <= 0 for s in sizes):
        raise ValueError(f"slice points {points} must rise strictly inside (0, {size})")
    return axis, sizes


@register("Slice", "shape")
def _slice(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    axis, sizes = slice_sizes(node, shape)
    return LayerShapes([(*shape[:axis], s, *shape[axis + 1 :]) for s in sizes], [])


def reshape_span(node: Node, ndim: int) -> tuple[int, int]:
    """The bottom axes ``[start, end)`` that the new ``shape`` replaces."""
    p = node.param.reshape_param
    start = int(p.axis) if p.axis >= 0 else ndim + int(p.axis) + 1
    if not 0 <= start <= ndim:
        raise ValueError(f"axis {p.axis} is out of range for a {ndim}-D bottom")
    if p.num_axes < -1:
        raise ValueError(f"num_axes {p.num_axes} must be -1 or more")
    end = ndim if p.num_axes == -1 else start + int(p.num_axes)
    if end > ndim:
        raise ValueError(f"axis + num_axes = {end} is out of range for a {ndim}-D bottom")
    return start, end


@register("Reshape", "shape")
def _reshape(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    if node.tops == node.bottoms:
        raise ValueError("Reshape cannot run in place")
    start, end = reshape_span(node, len(shape))
    dims = [int(d) for d in node.param.reshape_param.shape.dim]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise ValueError(f"shape {dims} may hold one -1 and no other negative dim")
    top = [*shape[:start], *dims, *shape[end:]]
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(shape):
                raise ValueError(f"shape dim {i} is 0 but the bottom has no axis {start + i}")
            top[start + i] = shape[start + i]
    if -1 in dims:
        known = math.prod(d for d in top if d != -1)
        if known == 0 or math.prod(shape) % known:
            raise ValueError(f"{list(shape)} cannot be reshaped to {top}")
        top[start + dims.index(-1)] = math.prod(shape) // known
    if math.prod(top) != math.prod(shape):
        raise ValueError(f"{list(shape)} and {top} hold different counts")
    return LayerShapes([tuple(top)], [])


def crop_offsets(node: Node, shape: Shape) -> tuple[int, list[int]]:
    """The first cropped axis and the offset of every axis from it on."""
    p = node.param.crop_param
    axis = canonical_axis(int(p.axis), len(shape))
    n = len(shape) - axis
    if len(p.offset) > 1 and len(p.offset) != n:
        raise ValueError(f"{len(p.offset)} offsets for the {n} axes from axis {axis}")
    offsets = [int(p.offset[0])] * n if len(p.offset) == 1 else [int(o) for o in p.offset]
    return axis, offsets or [0] * n


@register("Crop", "shape")
def _crop(node: Node, inputs: list[Shape]) -> LayerShapes:
    if len(inputs) != 2:
        raise ValueError("Crop takes two bottoms: the blob and one of the target size")
    shape, like = inputs
    if len(like) != len(shape):
        raise ValueError(f"bottoms {list(shape)} and {list(like)} differ in rank")
    axis, offsets = crop_offsets(node, shape)
    for i, off in enumerate(offsets, start=axis):
        if shape[i] - off < like[i]:
            raise ValueError(
                f"crop of size {like[i]} at offset {off} leaves axis {i} of size {shape[i]}"
            )
    return LayerShapes([(*shape[:axis], *like[axis:])], [])


@register("Tile", "shape")
def _tile(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.tile_param
    axis = canonical_axis(int(p.axis), len(shape))
    if not p.HasField("tiles") or p.tiles <= 0:
        raise ValueError("tiles must be set and positive")
    return LayerShapes([(*shape[:axis], shape[axis] * int(p.tiles), *shape[axis + 1 :])], [])


def _not_in_place(layer: caffe_pb2.LayerParameter) -> None:
    """Flatten and Split refuse to run in place (a CHECK in their LayerSetUp)."""
    if layer.bottom and layer.bottom[0] in layer.top:
        raise ValueError(f'top "{layer.bottom[0]}" is its bottom: {layer.type} cannot run in place')


def _concat_fields(layer: caffe_pb2.LayerParameter) -> None:
    p = layer.concat_param
    if p.HasField("axis") and p.HasField("concat_dim"):
        raise ValueError("concat_param: give axis or the legacy concat_dim, not both")


def _joins_rows(node: Node) -> bool:
    """Concat along axis 0 (also as the legacy concat_dim) stacks its bottoms' rows."""
    p = node.param.concat_param
    return (p.concat_dim if p.HasField("concat_dim") and not p.HasField("axis") else p.axis) == 0


describe(
    "Concat",
    opencv_tested=True,
    bottoms=(1, None),
    tops=1,
    validate=_concat_fields,
    joins_rows=_joins_rows,
)
describe("Crop", opencv_tested=True, bottoms=2, tops=1)
describe("Flatten", opencv_tested=True, bottoms=1, tops=1, validate=_not_in_place)
describe("Reshape", opencv_tested=True, bottoms=1, tops=1)
describe("Slice", opencv_tested=True, bottoms=1, tops=(1, None))
describe("Split", opencv_tested=True, bottoms=1, tops=(1, None), validate=_not_in_place)
describe("Tile", bottoms=1, tops=1)


@register("Silence", "shape")
def _silence(node: Node, inputs: list[Shape]) -> LayerShapes:
    return LayerShapes([], [])  # consumes its bottoms so that they are not net outputs


describe("Silence", role="training", bottoms=(1, None), tops=0)
