"""``type: "Python"`` layers in float64: a known class runs as its built-in replacement's
reference; any other is set up afresh and runs the user's ``reshape`` and ``forward`` on blobs
whose buffers are float64 (the user's numpy code computes in the blobs' dtype), and its
``backward`` likewise. Its own parameter blobs (``self.blobs.add_blob`` in ``setup``) are float64
too and hold the net's weights when it has them (else what ``setup`` wrote); the diffs its
``backward`` writes there are the parameters' gradients."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..ir.graph import Node
from ..registry import builtin_entry, register
from ..shapes.python_layer import call_layer, replacement, user_layer
from ._base import Arrays, BackwardContext, Grads, LayerContext


class Blob64:
    """pycaffe's Blob as a Python layer sees it (``data``, ``diff``, ``reshape``, ``shape``,
    ``count``, ``num``/``channels``/``height``/``width``), with float64 buffers; written here
    so the reference stays independent of the pycaffe shim the PyTorch back end uses."""

    def __init__(self, shape: tuple[int, ...], data: np.ndarray | None = None) -> None:
        self._shape = tuple(int(d) for d in shape)
        count = math.prod(self._shape)
        self._data = np.zeros(count) if data is None else np.array(data, np.float64).reshape(-1)
        self._diff = np.zeros(count)

    @property
    def data(self) -> np.ndarray:
        return self._data[: self.count].reshape(self._shape)

    @property
    def diff(self) -> np.ndarray:
        return self._diff[: self.count].reshape(self._shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def count(self) -> int:
        return math.prod(self._shape)

    def _legacy(self, index: int) -> int:
        return self._shape[index] if index < len(self._shape) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *args: Any) -> None:
        """Caffe's Reshape: the buffers grow only when the count exceeds them."""
        shape = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        self._shape = tuple(int(d) for d in shape)
        if self.count > self._data.size:
            self._data, self._diff = np.zeros(self.count), np.zeros(self.count)


def _blob64(shape: tuple[int, ...], data: np.ndarray | None = None) -> Blob64:
    return Blob64(shape, data)


class BlobVec64(list):
    """pycaffe's BlobVec (a layer's ``self.blobs``) of float64 blobs."""

    def add_blob(self, *args: Any) -> None:
        """Append a zero-filled blob of shape ``args``."""
        shape = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        self.append(Blob64(tuple(int(d) for d in shape)))


def _run(node: Node, inputs: Arrays, weights: Arrays) -> tuple[Any, list[Any], list[Any]]:
    layer = user_layer(node, BlobVec64)
    bottom = [_blob64(a.shape, a) for a in inputs]
    top = [_blob64((1,)) for _ in node.outputs]
    call_layer(layer, "setup", bottom, top)
    if weights:
        if len(weights) != len(layer.blobs):
            raise ValueError(
                f"the net gives {len(weights)} blob(s), setup added {len(layer.blobs)}"
            )
        for i, (blob, values) in enumerate(zip(layer.blobs, weights)):
            if tuple(np.shape(values)) != tuple(blob.shape):
                raise ValueError(
                    f"blob {i} has shape {tuple(np.shape(values))}, setup made {tuple(blob.shape)}"
                )
            blob.data[...] = values
    call_layer(layer, "reshape", bottom, top)
    call_layer(layer, "forward", bottom, top)
    return layer, bottom, top


@register("Python", "reference")
def _python(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    known = replacement(node)
    if known is not None:
        entry = builtin_entry(known.type, "reference")
        assert entry is not None
        return entry.fn(known, inputs, ctx)
    _, _, top = _run(node, inputs, list(ctx.blobs))
    return [np.array(t.data, np.float64) for t in top]


@register("Python", "reference_backward")
def _python_backward(node: Node, inputs: Arrays, diffs: Arrays, ctx: BackwardContext) -> Grads:
    known = replacement(node)
    if known is not None:
        entry = builtin_entry(known.type, "reference_backward")
        if entry is None:
            return [None] * len(inputs), []
        return entry.fn(known, inputs, diffs, dataclasses.replace(ctx))
    layer, bottom, top = _run(node, inputs, list(ctx.blobs))
    for blob, diff in zip(top, diffs):
        blob.diff[...] = diff
    for blob in layer.blobs:
        blob.diff[...] = 0.0
    call_layer(layer, "backward", top, list(ctx.propagate) or [True] * len(bottom), bottom)
    params = [np.array(b.diff, np.float64) for b in layer.blobs]
    return [np.array(b.diff, np.float64) for b in bottom], params
