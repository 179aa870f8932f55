"""What every reference layer function receives beside its input arrays."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir.graph import Shape

FLT_MAX = float(np.finfo(np.float32).max)  # Caffe's starting value for MAX pooling and Eltwise
FLT_MIN = float(np.finfo(np.float32).tiny)  # Caffe's floor under log() in SoftmaxWithLoss

Arrays = list[np.ndarray]
Grads = tuple[list["np.ndarray | None"], list["np.ndarray | None"]]


@dataclass(frozen=True)
class LayerContext:
    """Shapes at this run's input sizes (from the shape rules) and the layer's weights in float64.

    Layer functions are called as ``fn(node, inputs, ctx)`` and return one array per top; they
    never modify their inputs (a value may be shared by several layers). ``state`` is the
    layer's own record for a training pass: what its TRAIN forward draws at random (Dropout's
    ``mask``, given by the caller) and what it leaves behind (BatchNorm's updated ``blobs``)."""

    in_shapes: tuple[Shape, ...]
    out_shapes: tuple[Shape, ...]
    blobs: tuple[np.ndarray, ...]
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackwardContext(LayerContext):
    """What a backward function receives beside the bottoms and top diffs: the tops its forward
    computed and which diffs Caffe asks for (``propagate``: per bottom; ``param_propagate``:
    per parameter blob). Backward functions are called as ``fn(node, inputs, top_diffs, ctx)``
    and return ``(bottom_diffs, param_diffs)``, None where nothing is asked or computed."""

    outputs: tuple[np.ndarray, ...] = ()
    propagate: tuple[bool, ...] = ()
    param_propagate: tuple[bool, ...] = ()


def no_grads(inputs: Arrays, ctx: LayerContext) -> Grads:
    """Nothing flows back (a layer whose diffs Caffe leaves untouched)."""
    return [None] * len(inputs), [None] * len(ctx.blobs)


def broadcastable(operand: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """``operand`` reshaped to line up with axes ``axis ..`` of an ``ndim``-D blob."""
    return operand.reshape((1,) * axis + operand.shape + (1,) * (ndim - axis - operand.ndim))


LARGE_BLOB = 1 << 22  # elements: a blob from this size stays float32 where its type allows


def weight_rows(weight: np.ndarray, axis: int) -> Iterator[tuple[slice, np.ndarray]]:
    """``weight`` in float64, a slab of indices along ``axis`` at a time (each at most
    LARGE_BLOB elements): (the slice, its float64 slab). One slab, the whole, where it is
    float64 already (``float32_weights``: large blobs arrive as stored)."""
    size = weight.shape[axis] if weight.ndim else 1
    if weight.dtype == np.float64 or not weight.ndim:
        yield slice(0, size), np.asarray(weight, dtype=np.float64)
        return
    per = max(1, weight.size // max(size, 1))
    step = max(1, LARGE_BLOB // per)
    for start in range(0, size, step):
        where = slice(start, min(size, start + step))
        index = (slice(None),) * axis + (where,)
        yield where, weight[index].astype(np.float64)
