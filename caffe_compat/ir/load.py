"""One call from files to a checked Graph: read, upgrade, filter by phase, infer, join weights."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CaffeCompatError, NetDefinitionError
from ..io import read_weights
from ..io.dialects import settle
from ..io.prototxt import parse_text, read_text
from ..io.upgrade import is_v0, upgrade_net
from ..io.weights import Weights
from ..proto import caffe_pb2
from ..shapes.detection import settle_prior_layouts
from ..shapes.pooling import settle_odd_span_pooling
from .build import build_graph
from .graph import Graph, Shape
from .infer import Inference, Issue, check_weights, infer_shapes, match_weights
from .phase import NetState
from .placeholder import FALLBACK_SIDES, assumed_note, assumed_shapes


def settle_named(
    net: caffe_pb2.NetParameter, path: Any, blob_counts: Mapping[str, int] | None = None
) -> list[str]:
    """:func:`settle`, its errors naming the file (it sees the net, not where it came from)."""
    try:
        return settle(net, blob_counts)
    except CaffeCompatError as exc:
        if exc.path is not None or path is None:
            raise
        raise type(exc)(
            exc.reason,
            path=str(path),
            layer=exc.layer,
            layer_type=exc.layer_type,
            remedy=exc.remedy,
        ) from None


def settle_by_shapes(
    net: caffe_pb2.NetParameter, probe: Callable[[], tuple[Graph, Inference]]
) -> list[str]:
    """Fork meanings only the net's shapes tell (no field says which fork it was written for:
    TextBoxes'/FaceBoxes' PriorBox, darknet2caffe's pooling), tried when BVLC's rules leave a
    shape problem; ``probe`` builds ``net`` and infers leniently. Writes the answer into
    ``net``'s layers and returns one note per layer settled."""
    graph, inference = probe()
    if not any(i.kind == "shape-rule" for i in inference.issues):
        return []
    notes = settle_prior_layouts(net, graph, inference.shapes)
    if not notes:
        notes = settle_odd_span_pooling(
            net, lambda: not any(i.kind == "shape-rule" for i in probe()[1].issues)
        )
    return notes


def fork_notes(loaded: LoadedNet) -> list[str]:
    """What the report says about fork fields: each one skipped (allow_unknown_fields) and each
    fork meaning settled from more than the layer's text (io/dialects.py), and each layer that
    samples at test."""
    from ..shapes.activations import samples_at_test, sampling_note

    skipped = [f"skipped a field Caffe does not know ({s})" for s in loaded.skipped_fields]
    sampled = [sampling_note(n) for n in loaded.graph.nodes if samples_at_test(n)]
    dialects = [f"fork dialect: {d}" for d in loaded.dialects]
    return loaded.assumed + skipped + dialects + sampled


@dataclass
class LoadedNet:
    """A net definition, its weights (if any), the graph built from them and what was found."""

    graph: Graph
    net: caffe_pb2.NetParameter  # upgraded to V2
    prototxt_format: str  # "V0", "V1" or "V2"
    prototxt_path: str
    inference: Inference
    weights: Weights | None = None
    issues: list[Issue] = field(default_factory=list)
    dialects: list[str] = field(default_factory=list)  # fork meanings settled (io/dialects.py)
    # Fields skipped under allow_unknown_fields, named with their line and layer for the report.
    skipped_fields: list[str] = field(default_factory=list)
    # Inputs run at a typical shape because the caller asked (typical_input_shapes).
    assumed: list[str] = field(default_factory=list)


def load_net(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str] | Weights | None = None,
    *,
    phase: str = "TEST",
    stages: Iterable[str] = (),
    level: int = 0,
    input_shapes: Mapping[str, Shape] | None = None,
    strict: bool = True,
    allow_unknown_fields: bool = False,
    max_memory: Any = None,
    training: bool = False,
    typical_input_shapes: bool = False,
) -> LoadedNet:
    """Read a prototxt (V1 or V2) and optional weights (V1/V2 binary or HDF5) into a Graph.

    ``strict`` raises on the first shape problem and on any net/weights mismatch other than extra
    layers in the weights; lenient mode (for ``inspect``) records everything in ``issues``.
    ``training`` builds the net Caffe trains (losses, Accuracy and labels kept; ir/build.py).
    ``typical_input_shapes`` runs an input without a shape (or with a 1x1 placeholder its shape
    rules fail at) at the size nets named like it usually run at (ir/placeholder.py), and every
    report says so; ``input_shapes`` wins over it.
    """
    return load_net_text(
        read_text(prototxt),
        weights,
        path=str(Path(prototxt)),
        phase=phase,
        stages=stages,
        level=level,
        input_shapes=input_shapes,
        strict=strict,
        allow_unknown_fields=allow_unknown_fields,
        max_memory=max_memory,
        training=training,
        typical_input_shapes=typical_input_shapes,
    )


def _fitting_sides(
    chosen: dict[str, Shape],
    given: Mapping[str, Shape],
    probe: Callable[[Mapping[str, Shape]], tuple[Graph, Inference]],
) -> dict[str, Shape]:
    """The typical shapes ``chosen``, or where the net's shape rules reject them (a multi-scale
    net whose branches realign only at some sizes: DeepLab's 321 or 513, not ResNet's 224) the
    first of ``FALLBACK_SIDES`` (square) its rules accept; the note then names that size."""

    def fits(shapes: dict[str, Shape]) -> bool:
        try:
            _, inference = probe({**given, **shapes})
        except NetDefinitionError:
            return False
        return not any(issue.kind == "shape-rule" for issue in inference.issues)

    squares = {n: s for n, s in chosen.items() if len(s) == 4}
    if not squares or fits(chosen):
        return chosen
    for side in FALLBACK_SIDES:
        trial = {**chosen, **{n: (s[0], s[1], side, side) for n, s in squares.items()}}
        if fits(trial):
            return trial
    return chosen


def load_net_text(
    text: str,
    weights: str | os.PathLike[str] | Weights | None = None,
    *,
    path: str = "<text>",
    phase: str = "TEST",
    stages: Iterable[str] = (),
    level: int = 0,
    input_shapes: Mapping[str, Shape] | None = None,
    strict: bool = True,
    allow_unknown_fields: bool = False,
    max_memory: Any = None,
    training: bool = False,
    typical_input_shapes: bool = False,
) -> LoadedNet:
    """``load_net`` for a net definition held as text (``path`` names it in errors)."""
    net = caffe_pb2.NetParameter()
    index = parse_text(text, net, path=path, allow_unknown_fields=allow_unknown_fields)
    was_v0 = is_v0(net)
    was_v1 = upgrade_net(net, path=path)
    dialect_notes = settle_named(net, path)
    lines = {name: line for line, name in index.starts if name}

    given = dict(input_shapes or {})

    def build(
        lenient: bool = False, shapes: Mapping[str, Shape] | None = None
    ) -> tuple[Graph, Inference]:
        graph = build_graph(
            net,
            state=NetState.make(phase, stages, level),
            input_shapes=given if shapes is None else shapes,
            path=path,
            lines=lines,
            training=training,
        )
        return graph, infer_shapes(graph, strict=strict and not lenient)

    assumed: list[str] = []
    if typical_input_shapes:
        probe, probed = build(lenient=True)
        failed = any(issue.kind == "shape-rule" for issue in probed.issues)
        names = f"{probe.name} {os.path.basename(path)}"
        typical = assumed_shapes(probe.inputs, failed, names, given)
        chosen = _fitting_sides(typical, given, lambda shapes: build(lenient=True, shapes=shapes))
        for name, shape in chosen.items():
            note = assumed_note(name, probe.inputs[name], shape)
            if shape != typical[name]:
                usual = ",".join(map(str, typical[name]))
                note += f" (its layers refuse {usual}, the usual size: this is the first of the "
                note += "common sizes they accept)"
            assumed.append(note)
            given[name] = shape

    def by_shapes() -> list[str]:
        return settle_by_shapes(net, lambda: build(lenient=True))

    try:
        graph, inference = build()
    except NetDefinitionError:
        more = by_shapes()
        if not more:
            raise
        dialect_notes += more
        graph, inference = build()
    else:
        if not strict and any(i.kind == "shape-rule" for i in inference.issues):
            more = by_shapes()
            if more:
                dialect_notes += more
                graph, inference = build()
    if weights is not None and not isinstance(weights, Weights):
        weights = read_weights(weights, max_memory=max_memory)
    if weights is not None:
        # A layer type two forks define differently (BN) is told apart by the blobs it holds.
        more = settle_named(net, path, {name: len(blobs) for name, blobs in weights.blobs.items()})
        if more:
            dialect_notes += more
            graph, inference = build()
    loaded = LoadedNet(graph, net, "V0" if was_v0 else "V1" if was_v1 else "V2", path, inference)
    loaded.issues.extend(inference.issues)
    loaded.dialects = dialect_notes
    loaded.assumed = assumed + [
        f'line {line}, layer "{index.layer_at(line) or "?"}": {what}'
        for line, what in index.repaired
    ]
    loaded.skipped_fields = [
        f'line {line}, layer "{index.layer_at(line) or "?"}": {name}'
        for line, name in index.skipped
    ]
    if weights is not None:
        loaded.weights = weights
        found = match_weights(graph, loaded.weights, inference)
        loaded.issues.extend(found)
        if strict:
            check_weights(graph, found, loaded.weights.path)
    return loaded
