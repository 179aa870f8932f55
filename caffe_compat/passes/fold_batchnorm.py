"""Fold inference BatchNorm, and the Scale and Bias right after it, into the layer before it.

Caffe nets from the ResNet and MobileNet era spell every normalised convolution as three or four
layers (Convolution, BatchNorm with stored statistics, Scale with bias, sometimes Bias). At
inference they are one affine map per output channel, so an exported model can run a single
convolution instead: ``W' = W * a`` and ``b' = (b - mean) * a + beta (+ bias)`` with
``a = gamma / sqrt(var + eps)``. Folding is done in float64 from the statistics Caffe would use.

A fold is refused (the layers are left as they are) whenever it could change a value someone can
see: the convolution's output read by another layer or returned, BatchNorm computing batch
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
from ..shapes.geometry import canonical_axis
from ..shapes.normalization import stored_statistics, uses_global_stats


@dataclass(frozen=True)
class Fold:
    """One planned fold: ``into`` absorbs ``absorbed`` (BatchNorm, then Scale and/or Bias)."""

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
    shape = graph.shapes[value]
    if node.type == "InnerProduct":
        if len(shape) != 2:
            return f"{node.name} outputs {len(shape)} axes; its channels are not on axis 1"
        return None
    axis = canonical_axis(int(node.param.convolution_param.axis), len(graph.shapes[node.inputs[0]]))
    return None if axis == 1 else f"{node.name} convolves with channel axis {axis}"


def _per_channel_operand(graph: Graph, node: Node, channels: int) -> bool:
    """A learned Scale/Bias operand of one value per channel on axis 1 (not from a bottom)."""
    if len(node.inputs) != 1 or not node.blobs:
        return False
    p = node.param.scale_param if node.type == "Scale" else node.param.bias_param
    ndim = len(graph.shapes[node.inputs[0]])
    return tuple(node.blobs[0].shape) == (channels,) and canonical_axis(int(p.axis), ndim) == 1


def _plan_one(graph: Graph, bn: Node) -> Fold | Refusal:
    if not uses_global_stats(bn):
        return Refusal(bn.name, "normalises with batch statistics (not use_global_stats)")
    if len(bn.inputs) != 1 or len(bn.blobs) < 3:
        return Refusal(bn.name, "has no stored statistics attached")
    producer = graph.producer(bn.inputs[0])
    if producer is None or not registry.facts(producer.type).folds_batchnorm:
        kind = "a net input" if producer is None else f"a {producer.type} layer"
        return Refusal(bn.name, f"follows {kind}, not a convolution or inner product")
    if len(producer.inputs) != 1 or len(producer.outputs) != 1:
        return Refusal(bn.name, f"{producer.name} shares its weights over several bottoms")
    if not producer.blobs:
        return Refusal(bn.name, f"{producer.name} has no weights attached")
    why = _sole_reader(graph, bn.inputs[0], bn) or _channel_axis_ok(graph, producer)
    if why:
        return Refusal(bn.name, why)
    channels = graph.shapes[producer.outputs[0]][1]
    absorbed = [bn]
    for kind in ("Scale", "Bias"):
        current = absorbed[-1].outputs[0]
        readers = graph.consumers(current)
        if len(readers) != 1 or readers[0].type != kind or current in graph.outputs:
            continue
        if _per_channel_operand(graph, readers[0], channels):
            absorbed.append(readers[0])
    return Fold(producer.name, tuple(n.name for n in absorbed))


def plan(graph: Graph) -> tuple[list[Fold], list[Refusal]]:
    """Which BatchNorm layers fold into what, and which stay (with the reason)."""
    folds: list[Fold] = []
    refusals: list[Refusal] = []
    for node in graph.nodes:
        if node.type == "BatchNorm":
            decision = _plan_one(graph, node)
            (folds if isinstance(decision, Fold) else refusals).append(decision)
    return folds, refusals


def _affine(graph: Graph, fold: Fold) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``a`` and ``c`` such that the absorbed layers compute ``y = x * a + c``."""
    a: np.ndarray | None = None
    c: np.ndarray | None = None
    for name in fold.absorbed:
        node = graph.node(name)
        if node.type == "BatchNorm":
            mean, std = stored_statistics(node)
            a = 1.0 / std.astype(np.float64)
            c = -mean.astype(np.float64) * a
        elif node.type == "Scale":
            gamma = node.blobs[0].astype(np.float64)
            a, c = a * gamma, c * gamma
            if node.param.scale_param.bias_term:
                c = c + node.blobs[1].astype(np.float64)
        else:  # Bias
            c = c + node.blobs[0].astype(np.float64)
    assert a is not None and c is not None
    return a, c


def _fused_node(graph: Graph, fold: Fold) -> Node:
    base = graph.node(fold.into)
    last = graph.node(fold.absorbed[-1])
    a, c = _affine(graph, fold)
    weight = base.blobs[0].astype(np.float64)
    if base.type == "InnerProduct" and base.param.inner_product_param.transpose:
        weight = weight * a[None, :]
    else:
        weight = weight * a.reshape(-1, *([1] * (weight.ndim - 1)))
    param = type(base.param)()
    param.CopyFrom(base.param)
    param.name = last.name
    del param.top[:]
    param.top.extend(last.param.top)
    conv = param.inner_product_param if base.type == "InnerProduct" else param.convolution_param
    bias = base.blobs[1].astype(np.float64) if conv.bias_term else np.zeros_like(a)
    conv.bias_term = True
    return Node(
        name=last.name,
        type=base.type,
        param=param,
        inputs=list(base.inputs),
        outputs=list(last.outputs),
        blobs=[weight.astype(np.float32), (bias * a + c).astype(np.float32)],
        line=base.line,
    )


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
