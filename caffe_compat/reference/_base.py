"""What every reference layer function receives beside its input arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.graph import Shape

FLT_MAX = float(np.finfo(np.float32).max)  # Caffe's starting value for MAX pooling and Eltwise


@dataclass(frozen=True)
class LayerContext:
    """Shapes at this run's input sizes (from the shape rules) and the layer's weights in float64.

    Layer functions are called as ``fn(node, inputs, ctx)`` and return one array per top; they
    never modify their inputs (a value may be shared by several layers)."""

    in_shapes: tuple[Shape, ...]
    out_shapes: tuple[Shape, ...]
    blobs: tuple[np.ndarray, ...]


def broadcastable(operand: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """``operand`` reshaped to line up with axes ``axis ..`` of an ``ndim``-D blob."""
    return operand.reshape((1,) * axis + operand.shape + (1,) * (ndim - axis - operand.ndim))
