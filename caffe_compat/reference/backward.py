"""A float64 training pass: Caffe's ``ForwardBackward`` over a graph, the training engine's judge.

The forward keeps every value; the loss is Caffe's, the sum over tops of loss weight times the
top's sum. The backward walks the layers in reverse and calls each layer type's backward function
only where Caffe's ``Net::Init`` says the layer needs one (caffe_compat/ir/backward.py), asking
for exactly the bottom and parameter diffs Caffe computes. A value read by several layers gets the
sum of their diffs (Caffe's Split); a parameter shared by name gets the sum over the layers using
it. Random draws are inputs: Dropout's masks come from ``random``, by layer name::

    from caffe_compat.reference.backward import forward_backward

    result = forward_backward(graph, {"data": x, "label": y}, random={"drop6": mask})
    result.loss, result.params["conv1"][0], result.diff("conv1")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import registry
from ..errors import CaffeCompatError
from ..ir.backward import BackwardPlan, param_owners, plan_backward
from ..ir.graph import Graph
from ._base import BackwardContext, LayerContext
from ._plan import infer
from .run import _graph_of, _inputs


@dataclass
class Pass:
    """What one float64 forward and backward computed."""

    graph: Graph
    plan: BackwardPlan
    values: dict[str, np.ndarray]  # every value's data, by value name
    diffs: dict[str, np.ndarray]  # the diffs the backward computed, by value name
    params: dict[str, list[np.ndarray | None]]  # layer -> diff of each blob (shared: summed)
    loss: float
    blobs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # statistics after the pass

    def diff(self, blob: str) -> np.ndarray | None:
        """A Caffe blob's diff after backward: its first version's (in-place layers share it)."""
        versions = [v for v in self.graph.values if self.graph.blob_of.get(v, v) == blob]
        if not versions:
            raise KeyError(blob)
        return self.diffs.get(versions[0])


def forward_backward(
    net: object,
    feeds: Mapping[str, np.ndarray],
    *,
    random: Mapping[str, np.ndarray] | None = None,
    force_backward: bool | None = None,
) -> Pass:
    """Run ``net`` (a LoadedNet, or a Graph with weights attached) forward and backward in
    float64. ``force_backward`` defaults to the net's own setting when ``net`` is a LoadedNet."""
    graph = _graph_of(net)
    if force_backward is None:
        definition = getattr(net, "net", None)
        force_backward = bool(getattr(definition, "force_backward", False))
    registry.preflight(graph, ["reference"])
    arrays = _inputs(graph, feeds)
    shapes = infer(graph, {n: a.shape for n, a in arrays.items()}, check_weights=True)
    plan = plan_backward(graph, force_backward=force_backward)
    refused = plan.refusal()
    if refused is not None:
        node, _, reason = refused
        raise CaffeCompatError(reason, path=graph.path, layer=node.name, layer_type=node.type)
    states = {node.name: {} for node in graph.nodes}
    for name, mask in (random or {}).items():
        states.setdefault(name, {})["mask"] = np.asarray(mask, dtype=np.float64)
    env: dict[str, np.ndarray] = dict(arrays)
    blobs = {
        node.name: tuple(np.asarray(b, np.float64) for b in node.blobs) for node in graph.nodes
    }
    for node in graph.nodes:
        ctx = LayerContext(
            tuple(shapes[v] for v in node.inputs),
            tuple(shapes[v] for v in node.outputs),
            blobs[node.name],
            states[node.name],
        )
        result = _call(graph, node, "reference", node, [env[v] for v in node.inputs], ctx)
        for value, array in zip(node.outputs, result):
            env[value] = np.asarray(array, dtype=np.float64)
    loss = float(sum(w * env[v].sum() for v, w in plan.loss_weights.items()))
    diffs = {v: np.full(shapes[v], w) for v, w in plan.loss_weights.items()}
    layer_diffs: dict[str, list[np.ndarray | None]] = {}
    for index in reversed(range(len(graph.nodes))):
        node = graph.nodes[index]
        if not plan.layer[index]:
            continue
        top_diffs = [diffs.get(v, np.zeros(shapes[v])) for v in node.outputs]
        ctx = BackwardContext(
            tuple(shapes[v] for v in node.inputs),
            tuple(shapes[v] for v in node.outputs),
            blobs[node.name],
            states[node.name],
            outputs=tuple(env[v] for v in node.outputs),
            propagate=tuple(plan.bottoms[index]),
            param_propagate=tuple(plan.params[index]),
        )
        inputs = [env[v] for v in node.inputs]
        bottoms, params = _call(graph, node, "reference_backward", node, inputs, top_diffs, ctx)
        for value, wanted, diff in zip(node.inputs, plan.bottoms[index], bottoms):
            if wanted and diff is not None:
                diffs[value] = diffs[value] + diff if value in diffs else np.asarray(diff)
        computed = [d if w else None for d, w in zip(params, plan.params[index])]
        layer_diffs[node.name] = computed + [None] * (len(node.blobs) - len(computed))
    return Pass(
        graph,
        plan,
        env,
        diffs,
        _shared(graph, layer_diffs),
        loss,
        {n: s["blobs"] for n, s in states.items() if "blobs" in s},
    )


def _call(graph: Graph, node, backend: str, *args):
    entry = registry.lookup(node.type, backend)
    where = {"path": graph.path, "layer": node.name, "layer_type": node.type}
    if entry is None:
        what = "float64 backward" if backend == "reference_backward" else "float64 forward"
        raise CaffeCompatError(f"no {what} for this layer type", **where)
    try:
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in Caffe
            return entry.fn(*args)
    except (ValueError, registry.Unsupported) as exc:
        raise CaffeCompatError(str(exc), **where) from None


def _shared(
    graph: Graph, layer_diffs: Mapping[str, list[np.ndarray | None]]
) -> dict[str, list[np.ndarray | None]]:
    """Per layer, each blob's diff summed over every layer sharing that blob (Caffe's one
    blob per shared parameter)."""
    owners = param_owners(graph, [len(n.blobs) for n in graph.nodes])
    totals: dict[tuple[str, int], np.ndarray] = {}
    for (layer, j), owner in owners.items():
        diff = layer_diffs.get(layer, [None] * (j + 1))[j]
        if diff is not None:
            diff = np.asarray(diff, dtype=np.float64).reshape(
                graph.node(owner[0]).blobs[owner[1]].shape
            )
            totals[owner] = totals[owner] + diff if owner in totals else diff
    result: dict[str, list[np.ndarray | None]] = {}
    for node in graph.nodes:
        row = []
        for j in range(len(node.blobs)):
            owner = owners[(node.name, j)]
            total = totals.get(owner)
            row.append(None if total is None else total.reshape(node.blobs[j].shape))
        result[node.name] = row
    return result
