"""Which diffs a backward pass computes: Caffe's ``Net::Init`` decisions (src/caffe/net.cpp).

Caffe decides once, when the net is built: a layer needs backward when a bottom needs it or one
of its parameters has a non-zero ``lr_mult``; going back from the losses, a layer that feeds no
loss (or whose every top is cut by ``propagate_down: false``) computes nothing; ``force_backward``
then turns every layer on and every bottom whose layer allows it (``AllowForceBackward``), even
against ``propagate_down``, and every parameter diff, even at ``lr_mult: 0``. Caffe reasons over
its own layer list, with a Split layer wherever one top feeds several bottoms; so does this module,
so that one consumer's ``propagate_down: false`` does not cut the blob off from the others.

Both the training engine and the float64 reference read these decisions from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import registry
from .graph import Graph, Node


@dataclass
class BackwardPlan:
    """Caffe's decisions for one net, per graph node (in node order) and per value."""

    loss_weights: dict[str, float]  # value -> its non-zero loss weight
    layer: list[bool]  # layer_need_backward_
    bottoms: list[list[bool]]  # bottom_need_backward_, per node input
    params: list[list[bool]]  # whether the node's backward writes each parameter diff
    diffs: set[str] = field(default_factory=set)  # values whose diff a backward computes
    refusals: list[tuple[Node, int, str]] = field(default_factory=list)  # (node, bottom, why)

    def refusal(self) -> tuple[Node, int, str] | None:
        """The first bottom diff Caffe would abort on (NOT_IMPLEMENTED or LOG(FATAL))."""
        return self.refusals[0] if self.refusals else None


def loss_weights(node: Node) -> list[float]:
    """One weight per top: ``loss_weight`` as given, else 1 on a loss layer's first top."""
    given = [float(w) for w in node.param.loss_weight]
    if not given and registry.facts(node.type).loss:
        given = [1.0]
    return (given + [0.0] * len(node.outputs))[: len(node.outputs)]


def lr_mults(node: Node, count: int) -> list[float]:
    """Each parameter blob's ``lr_mult`` (1 when not given); 0 for statistics blobs (BatchNorm's,
    whose lr_mult Caffe forces to 0)."""
    if registry.facts(node.type).statistics:
        return [0.0] * count
    specs = node.param.param
    return [float(specs[j].lr_mult) if j < len(specs) else 1.0 for j in range(count)]


@dataclass
class _Layer:
    """One layer of Caffe's list: a graph node, a data layer or an inserted Split."""

    bottoms: list[str]
    tops: list[str]
    loss: list[float]
    lr: list[float]
    propagate: list[bool] | None  # propagate_down as given
    allow_force: list[bool]
    node: int | None = None
    need: bool = False
    bottom_need: list[bool] = field(default_factory=list)
    param_need: list[bool] = field(default_factory=list)


def _caffe_layers(graph: Graph, param_counts: Sequence[int]) -> list[_Layer]:
    """Caffe's layer list: data layers, nodes, and Splits (InsertSplits) under their own names."""
    consumers: dict[str, int] = {}
    for node in graph.nodes:
        for value in node.inputs:
            consumers[value] = consumers.get(value, 0) + 1
    weights = {
        value: weight
        for node in graph.nodes
        for value, weight, given in zip(
            node.outputs, loss_weights(node), [True] * len(node.param.loss_weight)
        )
        if given and weight
    }  # explicit loss weights count as a use (InsertSplits), defaults do not
    fanout = {v: consumers.get(v, 0) + (1 if v in weights else 0) for v in graph.values}
    taken: dict[str, int] = {}

    def source(value: str) -> str:
        if fanout[value] <= 1:
            return value
        index = taken.get(value, 1 if value in weights else 0)
        taken[value] = index + 1
        return f"{value}\x00split{index}"

    layers: list[_Layer] = []

    def splits(values: Sequence[str]) -> None:
        for value in values:
            if fanout[value] > 1:
                tops = [f"{value}\x00split{k}" for k in range(fanout[value])]
                loss = [weights.get(value, 0.0)] + [0.0] * (len(tops) - 1)
                layers.append(_Layer([value], tops, loss, [], None, [True]))

    for value in graph.inputs:
        layers.append(_Layer([], [value], [0.0], [], None, []))
        splits([value])
    for index, node in enumerate(graph.nodes):
        facts = registry.facts(node.type)
        allow = [
            facts.force_backward(node, j) if facts.force_backward else True
            for j in range(len(node.inputs))
        ]
        given = list(node.param.propagate_down)
        loss = loss_weights(node)
        if any(node.param.loss_weight):
            loss = [
                0.0 if out in weights and fanout[out] > 1 else w
                for out, w in zip(node.outputs, loss)
            ]
        layers.append(
            _Layer(
                [source(v) for v in node.inputs],
                list(node.outputs),
                loss,
                lr_mults(node, param_counts[index]),
                [bool(p) for p in given] if given else None,
                allow,
                node=index,
            )
        )
        splits(node.outputs)
    return layers


def plan_backward(
    graph: Graph, param_counts: Sequence[int] | None = None, *, force_backward: bool = False
) -> BackwardPlan:
    """Caffe's backward decisions for ``graph``; ``param_counts`` gives each node's number of
    parameter blobs (the attached blobs when omitted)."""
    counts = list(param_counts) if param_counts is not None else [len(n.blobs) for n in graph.nodes]
    layers = _caffe_layers(graph, counts)
    blob_need: dict[str, bool] = {}
    for layer in layers:  # forward: Net::Init's first loop
        need = False
        layer.bottom_need = []
        for j, blob in enumerate(layer.bottoms):
            need |= blob_need.get(blob, False)
            wanted = (
                layer.propagate[j] if layer.propagate is not None else blob_need.get(blob, False)
            )
            layer.bottom_need.append(wanted)
        layer.param_need = [lr != 0 for lr in layer.lr]
        need |= any(layer.param_need)
        layer.need = need
        if need:
            for top in layer.tops:
                blob_need[top] = True
    under_loss: set[str] = set()
    skip: set[str] = set()
    for layer in reversed(layers):  # backward: which layers feed a loss
        contributes = False
        skip_all = True
        for top, weight in zip(layer.tops, layer.loss):
            if weight or top in under_loss:
                contributes = True
            if top not in skip:
                skip_all = False
            if contributes and not skip_all:
                break
        if layer.need and skip_all:
            layer.need = False
            layer.bottom_need = [False] * len(layer.bottoms)
        if not contributes:
            layer.need = False
        for j, blob in enumerate(layer.bottoms):
            if contributes:
                under_loss.add(blob)
            else:
                layer.bottom_need[j] = False
            if not layer.bottom_need[j]:
                skip.add(blob)
    if force_backward:
        for layer in layers:
            layer.need = True
            layer.bottom_need = [
                need or allow for need, allow in zip(layer.bottom_need, layer.allow_force)
            ]
            layer.param_need = [True] * len(layer.lr)
    return _plan(graph, layers)


def _plan(graph: Graph, layers: list[_Layer]) -> BackwardPlan:
    n = len(graph.nodes)
    plan = BackwardPlan({}, [False] * n, [[] for _ in range(n)], [[] for _ in range(n)])
    for node in graph.nodes:
        for value, weight in zip(node.outputs, loss_weights(node)):
            if weight:
                plan.loss_weights[value] = weight
    for layer in layers:
        if layer.need:
            plan.diffs.update(
                b.split("\x00")[0] for b, w in zip(layer.bottoms, layer.bottom_need) if w
            )
        if layer.node is None:
            continue
        node = graph.nodes[layer.node]
        plan.layer[layer.node] = layer.need
        plan.bottoms[layer.node] = [layer.need and w for w in layer.bottom_need]
        plan.params[layer.node] = [layer.need and w for w in layer.param_need]
        check = registry.facts(node.type).no_backward
        if layer.need and check is not None:
            for j, wanted in enumerate(layer.bottom_need):
                reason = check(node, j) if wanted else None
                if reason:
                    plan.refusals.append((node, j, reason))
    return plan


def param_owners(
    graph: Graph, param_counts: Sequence[int]
) -> dict[tuple[str, int], tuple[str, int]]:
    """(layer, blob index) -> the (layer, blob index) that owns the blob: itself, or the first
    layer that named it in ``param { name: }`` (Caffe's ``AppendParam``)."""
    named: dict[str, tuple[str, int]] = {}
    owners: dict[tuple[str, int], tuple[str, int]] = {}
    for node, count in zip(graph.nodes, param_counts):
        specs = node.param.param
        for j in range(count):
            name = specs[j].name if j < len(specs) else ""
            key = (node.name, j)
            owners[key] = named.setdefault(name, key) if name else key
    return owners
