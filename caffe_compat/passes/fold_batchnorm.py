"""Fold inference BatchNorm, and the per-channel affine layers right after it, into the layer
before it.

Caffe nets from the ResNet and MobileNet era spell every normalised convolution as three or four
layers (Convolution, BatchNorm with stored statistics, Scale with bias, sometimes Bias). At
inference they are one affine map per output channel, so an exported model can run a single
convolution instead: ``W' = W * a`` and ``b' = b * a + c``. Folding is done in float64 from the
statistics Caffe would use.

Which layers take part is read from their registry facts, never from their type names: a layer
absorbs the fold when it ``folds_batchnorm`` (its ``rescale`` edits the weights, ``channel_axis``
says where its output channels are, ``bias_term`` names the switch that adds a bias blob), and a
layer is absorbed when its ``affine`` fact gives its per-channel ``(a, c)``.

A fold is refused (the layers are left as they are) whenever it could change a value someone can
see: the producer's output read by another layer or returned, BatchNorm computing batch
statistics, weights shared over several bottoms, or operands that are not one number per channel.

The fused layer takes the name of the last layer it absorbed. Its output is that layer's output:
the SSA value names (``blob@layer``) keep meaning "produced by this layer", and references that
report outputs by layer name (OpenCV, stored Caffe blobs) stay comparable value by value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import registry
from ..ir.graph import Graph, Node

TRIGGER = "BatchNorm"  # the layer type this pass folds; what follows it is read from facts


@dataclass(frozen=True)
class Fold:
    """One planned fold: ``into`` absorbs ``absorbed`` (BatchNorm, then its affine followers)."""

    into: str
    absorbed: tuple[str, ...]

    @property
    def name(self) -> str:
        """The fused layer's name: the last absorbed layer's, whose output it produces."""
        return self.absorbed[-1]


@dataclass(frozen=True)
class Refusal:
    """A BatchNorm left unfolded, and why."""

    layer: str
    reason: str


def _sole_reader(graph: Graph, value: str, reader: Node) -> str | None:
    """Why ``value`` cannot disappear: it is a net output or another layer reads it too."""
    if value in graph.outputs:
        return f'"{value}" is a net output'
    others = [n.name for n in graph.consumers(value) if n is not reader]
    if others:
        return f'"{value}" is also read by {", ".join(others)}'
    return None


def _channel_axis_ok(graph: Graph, node: Node) -> str | None:
    """The producer's output channels must sit on axis 1, where BatchNorm keeps its channels."""
    (value,) = node.outputs
    axis = registry.channel_axis(node, len(graph.shapes[value]))
    return None if axis == 1 else f"{node.name} puts its output channels on axis {axis}, not 1"


def _affine_of(graph: Graph, node: Node) -> tuple[np.ndarray, np.ndarray] | str:
    """The node's per-channel ``(a, c)`` at inference, or why it has none."""
    affine = registry.facts(node.type).affine
    if affine is None:
        return f"a {node.type} layer is not a per-channel affine map"
    return affine(node, graph.shapes[node.inputs[0]])


def _plan_one(graph: Graph, bn: Node) -> Fold | Refusal:
    why = _affine_of(graph, bn)
    if isinstance(why, str):
        return Refusal(bn.name, why)
    producer = graph.producer(bn.inputs[0])
    info = registry.facts(producer.type) if producer is not None else None
    if info is None or not info.folds_batchnorm:
        kind = "a net input" if producer is None else f"a {producer.type} layer"
        return Refusal(bn.name, f"follows {kind}, not a layer BatchNorm folds into")
    if len(producer.inputs) != 1 or len(producer.outputs) != 1:
        return Refusal(bn.name, f"{producer.name} shares its weights over several bottoms")
    if not producer.blobs:
        return Refusal(bn.name, f"{producer.name} has no weights attached")
    why = _sole_reader(graph, bn.inputs[0], bn) or _channel_axis_ok(graph, producer)
    if why:
        return Refusal(bn.name, why)
    absorbed = [bn]
    while True:
        current = absorbed[-1].outputs[0]
        readers = graph.consumers(current)
        if len(readers) != 1 or current in graph.outputs or readers[0].type == TRIGGER:
            break
        if isinstance(_affine_of(graph, readers[0]), str):
            break
        absorbed.append(readers[0])
    return Fold(producer.name, tuple(n.name for n in absorbed))


def plan(graph: Graph) -> tuple[list[Fold], list[Refusal]]:
    """Which BatchNorm layers fold into what, and which stay (with the reason)."""
    folds: list[Fold] = []
    refusals: list[Refusal] = []
    for node in graph.nodes:
        if node.type == TRIGGER:
            decision = _plan_one(graph, node)
            (folds if isinstance(decision, Fold) else refusals).append(decision)
    return folds, refusals


def _affine(graph: Graph, fold: Fold) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``a`` and ``c`` such that the absorbed layers compute ``y = x * a + c``."""
    a: np.ndarray | float = 1.0
    c: np.ndarray | float = 0.0
    for name in fold.absorbed:
        scale, shift = _affine_of(graph, graph.node(name))
        a, c = a * scale, c * scale + shift
    return np.asarray(a, np.float64), np.asarray(c, np.float64)


def _fused_node(graph: Graph, fold: Fold) -> Node:
    base = graph.node(fold.into)
    last = graph.node(fold.absorbed[-1])
    info = registry.facts(base.type)
    a, c = _affine(graph, fold)
    param = type(base.param)()
    param.CopyFrom(base.param)
    param.name = last.name
    del param.top[:]
    param.top.extend(last.param.top)
    blobs = list(base.blobs)
    settings = getattr(param, info.param_message)
    if not getattr(settings, info.bias_term):
        setattr(settings, info.bias_term, True)
        blobs.append(np.zeros(len(a), np.float32))
    fused = Node(
        name=last.name,
        type=base.type,
        param=param,
        inputs=list(base.inputs),
        outputs=list(last.outputs),
        blobs=blobs,
        line=base.line,
    )
    info.rescale(fused, a, c)
    return fused


def _copy(node: Node) -> Node:
    param = type(node.param)()
    param.CopyFrom(node.param)
    return dataclasses.replace(
        node,
        param=param,
        inputs=list(node.inputs),
        outputs=list(node.outputs),
        blobs=list(node.blobs),
    )


def fold_batchnorm(graph: Graph) -> Graph:
    """A new graph with every safe fold applied; ``graph`` itself is left untouched.

    ``graph.notes`` of the result says what was folded and why any BatchNorm was left alone.
    """
    folds, refusals = plan(graph)
    fused = {fold.into: _fused_node(graph, fold) for fold in folds}
    absorbed = {name for fold in folds for name in fold.absorbed}
    gone: set[str] = set()  # values no layer produces any more
    for fold in folds:
        gone.update(graph.node(fold.into).outputs)
        for name in fold.absorbed[:-1]:
            gone.update(graph.node(name).outputs)
    nodes = [
        fused[node.name] if node.name in fused else _copy(node)
        for node in graph.nodes
        if node.name not in absorbed
    ]
    notes = list(graph.notes)
    notes += [f"folded {', '.join(f.absorbed)} into {f.into} (now named {f.name})" for f in folds]
    notes += [f"left {r.layer} unfolded: {r.reason}" for r in refusals]
    return dataclasses.replace(
        graph,
        inputs=dict(graph.inputs),
        nodes=nodes,
        outputs=list(graph.outputs),
        blob_of={v: b for v, b in graph.blob_of.items() if v not in gone},
        final={b: v for b, v in graph.final.items() if v not in gone},
        shapes={v: s for v, s in graph.shapes.items() if v not in gone},
        dropped=list(graph.dropped),
        notes=notes,
    )
