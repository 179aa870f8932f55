"""``type: "Python"`` layers in float64: a known class runs as its built-in replacement's
reference; any other runs the user's ``reshape`` and ``forward`` on blobs whose buffers are
float64 (the user's numpy code computes in the blobs' dtype), and its ``backward`` likewise."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..ir.graph import Node
from ..registry import builtin_entry, register
from ..shapes.python_layer import call_layer, replacement, user_layer
from ._base import Arrays, BackwardContext, Grads, LayerContext


def _blob64(shape: tuple[int, ...], data: np.ndarray | None = None) -> Any:
    from ..pycaffe import Blob

    class Blob64(Blob):
        """A pycaffe blob with a float64 buffer."""

        def __init__(self, shape: tuple[int, ...], data: np.ndarray | None = None) -> None:
            super().__init__(shape)
            count = math.prod(self.shape)
            self._buf = (
                np.array(data, np.float64).reshape(-1) if data is not None else np.zeros(count)
            )

        def _set_shape(self, shape: tuple[int, ...]) -> None:
            if math.prod(shape) > self._buf.size:
                self._buf = np.zeros(math.prod(shape))
                self._diff = None
                self.version += 1
            self._shape = tuple(shape)

        @property
        def diff(self) -> np.ndarray:
            count = math.prod(self._shape)
            if self._diff is None or self._diff.size < count:
                self._diff = np.zeros(max(count, self._buf.size))
            return self._diff[:count].reshape(self._shape)

    return Blob64(shape, data)


def _run(node: Node, inputs: Arrays) -> tuple[Any, list[Any], list[Any]]:
    layer = user_layer(node)
    bottom = [_blob64(a.shape, a) for a in inputs]
    top = [_blob64((1,)) for _ in node.outputs]
    call_layer(layer, "setup", bottom, top)
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
    _, _, top = _run(node, inputs)
    return [np.array(t.data, np.float64) for t in top]


@register("Python", "reference_backward")
def _python_backward(node: Node, inputs: Arrays, diffs: Arrays, ctx: BackwardContext) -> Grads:
    known = replacement(node)
    if known is not None:
        entry = builtin_entry(known.type, "reference_backward")
        if entry is None:
            return [None] * len(inputs), []
        return entry.fn(known, inputs, diffs, dataclasses.replace(ctx))
    layer, bottom, top = _run(node, inputs)
    for blob, diff in zip(top, diffs):
        blob.diff[...] = diff
    call_layer(layer, "backward", top, list(ctx.propagate) or [True] * len(bottom), bottom)
    return [np.array(b.diff, np.float64) for b in bottom], []
