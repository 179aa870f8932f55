"""Before any array is computed: value shapes at the given input sizes, a weights check, the
bytes a forward needs, and whether the batch can be split image by image.

Shapes come from the registered shape rules (Caffe's ``Reshape`` logic), run again at the actual
input sizes, so a bad size or a weight that no longer fits fails here with the layer's name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .. import registry
from ..errors import CaffeCompatError, NetDefinitionError, WeightsMismatchError
from ..ir.graph import Graph, Node, Shape
from ._base import LARGE_BLOB

ITEM = 8  # bytes of one float64
FALLBACK_LIMIT = 4 << 30


def _fmt(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _where(graph: Graph, node: Node) -> dict:
    return {"path": graph.path, "layer": node.name, "layer_type": node.type, "line": node.line}


def infer(graph: Graph, inputs: Mapping[str, Shape], *, check_weights: bool) -> dict[str, Shape]:
    """Every value's shape for these input shapes; raises naming the first layer that fails.

    With ``check_weights`` each layer's attached blobs must have the shapes its rule asks for
    at these sizes (an InnerProduct after a resized input would not)."""
    shapes: dict[str, Shape] = dict(inputs)
    for node in graph.nodes:
        entry = registry.lookup(node.type, "shape")
        if entry is None:
            raise NetDefinitionError(f'no shape rule for type "{node.type}"', **_where(graph, node))
        try:
            outs, params = entry.fn(node, [shapes[v] for v in node.inputs])
            if len(outs) != len(node.outputs):
                raise ValueError(f"{len(node.outputs)} tops but the rule gave {len(outs)}")
        except ValueError as exc:
            raise NetDefinitionError(str(exc), **_where(graph, node)) from None
        shapes.update((v, tuple(int(d) for d in s)) for v, s in zip(node.outputs, outs))
        if check_weights:
            _check_blobs(graph, node, [tuple(int(d) for d in p) for p in params])
    return shapes


def _check_blobs(graph: Graph, node: Node, expected: list[Shape]) -> None:
    if not expected:
        return
    if not node.blobs:
        raise WeightsMismatchError("has no weights attached", **_where(graph, node))
    have = [tuple(b.shape) for b in node.blobs]
    if have != expected:
        raise WeightsMismatchError(
            f"holds blobs {', '.join(map(_fmt, have))} but these input sizes need "
            f"{', '.join(map(_fmt, expected))}",
            **_where(graph, node),
        )


# --- memory ----------------------------------------------------------------------------------


def memory_limit() -> int:
    """Half of the memory the kernel says is available now (4 GiB when it cannot be read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    return FALLBACK_LIMIT


def _bytes(shape: Shape) -> int:
    return math.prod(shape) * ITEM


def _scratch(node: Node, ins: list[Shape], outs: list[Shape]) -> int:
    """Bytes a layer allocates while it runs, beyond its inputs and outputs: the scratch its
    ``workspace`` fact declares (im2col columns, decoded boxes, ...), once per bottom for a
    layer with a top per bottom, and two temporaries the size of its tops."""
    info = registry.facts(node.type)
    floats = 0
    if info.workspace is not None:
        # A layer with a top per bottom (Convolution) computes each pair on its own.
        pairs = [([b], [t]) for b, t in zip(ins, outs)] if info.same_count else [(ins, outs)]
        floats = sum(info.workspace(node, bottoms, tops) for bottoms, tops in pairs)
    return floats * ITEM + 2 * sum(_bytes(s) for s in outs)


def _weight_bytes(node: Node) -> int:
    """The layer's weights in float64 while it runs: a large blob of a ``float32_weights`` type
    one slab at a time (reference/_base.weight_rows), the rest whole."""
    slabbed = registry.facts(node.type).float32_weights
    return sum(
        min(b.size, LARGE_BLOB) * ITEM if slabbed and b.size >= LARGE_BLOB else b.size * ITEM
        for b in (np.asarray(blob) for blob in node.blobs)
    )


def value_bytes(graph: Graph, shapes: Mapping[str, Shape]) -> dict[str, int]:
    """Bytes of each float64 value; detection rows are bounded by what the layer's settings
    allow (its ``detections`` fact; the shape rule only gives a placeholder)."""
    sizes = {v: _bytes(s) for v, s in shapes.items()}
    for node in graph.nodes:
        most = registry.facts(node.type).detections
        if most is not None:
            rows = most(node, [shapes[v] for v in node.inputs])
            sizes[node.outputs[0]] = rows * shapes[node.outputs[0]][-1] * ITEM
    return sizes


def peak_bytes(graph: Graph, shapes: Mapping[str, Shape], keep: Iterable[str]) -> int:
    """The most bytes alive at once: live float64 values, one layer's scratch and its weights
    in float64."""
    keep = set(keep)
    sizes = value_bytes(graph, shapes)
    last = last_uses(graph)
    live = {v: sizes[v] for v in graph.inputs}
    peak = sum(live.values())
    for index, node in enumerate(graph.nodes):
        ins = [shapes[v] for v in node.inputs]
        outs = [shapes[v] for v in node.outputs]
        live.update((v, sizes[v]) for v in node.outputs)
        weights = _weight_bytes(node)
        peak = max(peak, sum(live.values()) + _scratch(node, ins, outs) + weights)
        for value in [*node.inputs, *node.outputs]:
            if last.get(value) == index and value not in keep:
                live.pop(value, None)
    return peak


def last_uses(graph: Graph) -> dict[str, int]:
    """Index of the last node reading each value (its producer's, when nothing reads it)."""
    last: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for value in [*node.inputs, *node.outputs]:
            last[value] = index
    return last


# --- splitting the batch ---------------------------------------------------------------------

BATCH, CONST, DETECTIONS = "batch", "const", "detections"


@dataclass(frozen=True)
class Split:
    """How each value of a split run is put back together: concatenated along axis 0 (``batch``),
    taken from the first image (``const``: it does not depend on the data), or DetectionOutput
    rows renumbered by image (``detections``). ``reason`` says why a net cannot be split."""

    roles: dict[str, str]
    reason: str | None = None


def _mixes_items(node: Node, shape: Shape) -> bool:
    """Layers whose output keeps the batch axis but whose items depend on other items."""
    mixes = registry.facts(node.type).mixes_batch
    return mixes is not None and mixes(node, shape)


def split_roles(
    graph: Graph, full: Mapping[str, Shape], single: Mapping[str, Shape], batch: int
) -> Split:
    """Decide whether running image by image gives the same values, and how to merge them.

    A value carries the batch when its shape is ``(batch, *rest)`` for the whole input and
    ``(1, *rest)`` for one image and no layer on its path mixes items; a value computed only
    from constants is a constant. Anything else (a reduction over the batch axis, a reshape
    that folds it, a user's own layer) makes the net unsplittable."""
    roles = {v: BATCH for v in graph.inputs}
    for node in graph.nodes:
        kinds = {roles[v] for v in node.inputs}
        info = registry.facts(node.type)
        if info.shape_only:  # the same for every image
            roles.update((v, CONST) for v in node.outputs)
            continue
        if info.detections is not None:
            if DETECTIONS in kinds or len(node.inputs) < 3 or roles[node.inputs[2]] != CONST:
                return Split(roles, f'layer "{node.name}" takes no per-image boxes and priors')
            roles[node.outputs[0]] = DETECTIONS
            continue
        entry = registry.lookup(node.type, "reference")
        if entry is None or not entry.builtin:
            return Split(roles, f'layer "{node.name}" ({node.type}) is not a built-in layer')
        if kinds <= {CONST}:
            roles.update((v, CONST) for v in node.outputs)
            continue
        if DETECTIONS in kinds or _mixes_items(node, full[node.inputs[0]]):
            return Split(roles, f'layer "{node.name}" ({node.type}) mixes the images of a batch')
        for value in node.outputs:
            whole, one = full[value], single[value]
            if not (whole and one and whole[0] == batch and one[0] == 1 and whole[1:] == one[1:]):
                return Split(roles, f'layer "{node.name}" ({node.type}) folds the batch axis')
            roles[value] = BATCH
    return Split(roles)


def single_shapes(graph: Graph, inputs: Mapping[str, Shape]) -> dict[str, Shape] | str:
    """Shapes for one image, or why the net cannot run on one image."""
    try:
        return infer(graph, {n: (1, *s[1:]) for n, s in inputs.items()}, check_weights=True)
    except CaffeCompatError as exc:
        return f"it cannot run on one image ({exc})"
