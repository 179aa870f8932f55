"""Caffe's ``GradientChecker`` (src/caffe/test/test_gradient_check_util.hpp) for the float64
reference: a layer's backward against central differences of its forward.

As in Caffe, the objective is half the sum of squares of every top (its diff is then the top's
data) or one top element (``top_element``); every bottom the layer can send a diff to and every
parameter blob is perturbed one element at a time by +-``step``; an element within
``kink_range`` of ``kink`` (ReLU's 0, say) is skipped, since the forward has no derivative
there; each element must agree within ``threshold * max(|analytic|, |numeric|, 1)``. In float64 a
step of 1e-2 leaves only the O(step^2) truncation error, so thresholds can be tight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import registry
from ..errors import CaffeCompatError
from ..ir.graph import Graph, Node
from ._base import BackwardContext, LayerContext
from ._plan import infer


@dataclass
class Mismatch:
    what: str  # "bottom 0", "param 1"
    index: tuple[int, ...]
    analytic: float
    numeric: float


@dataclass
class GradientReport:
    checked: int = 0
    skipped: int = 0  # elements at a kink
    worst: float = 0.0  # largest |analytic - numeric| / max(|analytic|, |numeric|, 1)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def __str__(self) -> str:
        head = f"{self.checked} checked, {self.skipped} at kinks, worst {self.worst:.3g}"
        rows = [
            f"  {m.what} {m.index}: analytic {m.analytic:.9g}, numeric {m.numeric:.9g}"
            for m in self.mismatches[:10]
        ]
        return "\n".join([head, *rows])


class _Layer:
    """One node run on its own, as the checker sees it."""

    def __init__(self, graph: Graph, node: Node, feeds: Mapping[str, np.ndarray], state: dict):
        self.node = node
        self.state = state
        self.inputs = [np.asarray(feeds[v], dtype=np.float64) for v in node.inputs]
        self.blobs = [np.asarray(b, dtype=np.float64).copy() for b in node.blobs]
        shapes = infer(graph, {v: np.shape(feeds[v]) for v in graph.inputs}, check_weights=True)
        self.in_shapes = tuple(shapes[v] for v in node.inputs)
        self.out_shapes = tuple(shapes[v] for v in node.outputs)
        self.forward_fn = registry.lookup(node.type, "reference")
        self.backward_fn = registry.lookup(node.type, "reference_backward")
        if self.forward_fn is None or self.backward_fn is None:
            raise CaffeCompatError(
                "no float64 forward and backward", layer=node.name, layer_type=node.type
            )

    def forward(self) -> list[np.ndarray]:
        ctx = LayerContext(self.in_shapes, self.out_shapes, tuple(self.blobs), dict(self.state))
        with np.errstate(all="ignore"):
            return [
                np.asarray(t, np.float64) for t in self.forward_fn.fn(self.node, self.inputs, ctx)
            ]

    def backward(self, tops: list[np.ndarray], diffs: list[np.ndarray], propagate) -> tuple:
        ctx = BackwardContext(
            self.in_shapes,
            self.out_shapes,
            tuple(self.blobs),
            dict(self.state),
            outputs=tuple(tops),
            propagate=tuple(propagate),
            param_propagate=(True,) * len(self.blobs),
        )
        with np.errstate(all="ignore"):
            return self.backward_fn.fn(self.node, self.inputs, diffs, ctx)


def _objective(tops: list[np.ndarray], element: tuple[int, int] | None) -> float:
    if element is None:
        return float(sum(np.square(t).sum() for t in tops) / 2)
    top, index = element
    return float(tops[top].reshape(-1)[index])


def _top_diffs(tops: list[np.ndarray], element: tuple[int, int] | None) -> list[np.ndarray]:
    if element is None:
        return [t.copy() for t in tops]
    diffs = [np.zeros(t.shape) for t in tops]
    diffs[element[0]].reshape(-1)[element[1]] = 1.0
    return diffs


def check_gradient(
    graph: Graph,
    feeds: Mapping[str, np.ndarray],
    layer: str | None = None,
    *,
    step: float = 1e-2,
    threshold: float = 1e-6,
    kink: float = 0.0,
    kink_range: float = -1.0,
    top_element: tuple[int, int] | None = None,
    bottoms: list[int] | None = None,
    state: dict | None = None,
) -> GradientReport:
    """Check the backward of ``layer`` (the graph's only computing node when None) at ``feeds``
    (values for the layer's bottoms, by value name). ``bottoms`` limits the bottoms checked
    (default: each one the layer's facts let a diff reach); ``state`` is the layer's training
    state (Dropout's ``mask``)."""
    nodes = [n for n in graph.nodes if layer is None or n.name == layer]
    if len(nodes) != 1:
        raise ValueError(f"name one layer of {[n.name for n in graph.nodes]}")
    node = nodes[0]
    run = _Layer(graph, node, feeds, dict(state or {}))
    refuse = registry.facts(node.type).no_backward
    if bottoms is None:
        bottoms = [j for j in range(len(node.inputs)) if refuse is None or not refuse(node, j)]
    propagate = [j in bottoms for j in range(len(node.inputs))]
    tops = run.forward()
    grads, params = run.backward(tops, _top_diffs(tops, top_element), propagate)
    report = GradientReport()
    targets = [(f"bottom {j}", run.inputs[j], grads[j]) for j in bottoms]
    targets += [
        (f"param {j}", blob, params[j])
        for j, blob in enumerate(run.blobs)
        if j < len(params) and params[j] is not None
    ]
    for what, array, analytic in targets:
        if analytic is None:  # the layer writes no diff there: its forward must not depend on it
            analytic = np.zeros(array.shape)
        analytic = np.asarray(analytic, dtype=np.float64).reshape(array.shape)
        for index in np.ndindex(array.shape):
            value = array[index]
            if kink - kink_range <= abs(value) <= kink + kink_range:
                report.skipped += 1
                continue
            array[index] = value + step
            plus = _objective(run.forward(), top_element)
            array[index] = value - step
            minus = _objective(run.forward(), top_element)
            array[index] = value
            numeric = (plus - minus) / (2 * step)
            computed = float(analytic[index])
            scale = max(abs(computed), abs(numeric), 1.0)
            error = abs(computed - numeric) / scale
            report.checked += 1
            report.worst = max(report.worst, error)
            if not error <= threshold:
                report.mismatches.append(Mismatch(what, index, computed, numeric))
    return report
