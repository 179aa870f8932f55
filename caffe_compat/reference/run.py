"""The driver: checks everything first, then walks the graph once in Caffe's order, in float64.

Values are freed after their last reader unless requested. When the whole batch would not fit in
``max_memory`` the batch runs image by image (if the net allows it and one image fits); otherwise
one error says how many bytes were needed. A result is never silently partial.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from .. import registry
from ..errors import CaffeCompatError, MemoryBudgetError
from ..ir.graph import Graph, Node, Shape
from ._base import LARGE_BLOB, LayerContext
from ._plan import (
    BATCH,
    CONST,
    infer,
    last_uses,
    memory_limit,
    peak_bytes,
    single_shapes,
    split_roles,
    value_bytes,
)

BACKEND = "reference"


def forward(
    net: object,
    feeds: Mapping[str, np.ndarray],
    outputs: Iterable[str] | None = None,
    *,
    max_memory: int | None = None,
    fixed: Mapping[str, np.ndarray] | None = None,
    sink: Callable[[str, np.ndarray], None] | None = None,
    resume: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``net`` (a LoadedNet, or a Graph with weights attached) on ``feeds`` in float64.

    Returns float64 arrays keyed as asked: a Caffe blob name gives the blob's value after
    in-place layers (what Caffe's ``net.blobs`` shows), ``blob@layer`` an earlier value.
    ``outputs=None`` returns every blob of Caffe's ``net.blobs``, inputs included, in execution
    order. ``max_memory`` (bytes) defaults to half of the available memory. ``fixed`` (value
    name -> array of its shape) takes those values as given instead of computing them: verify
    reruns the judge with a back end's choice where a discrete output (an argmax mask) sat at
    a near-tie (verify/ties.py). ``sink`` (requested name, array) receives each requested value
    as soon as it is computed, and nothing is returned: only the live values are held, so a net
    whose values together exceed the memory can still be judged (verify's streamed mode).
    ``resume`` (with ``fixed``): an earlier run's values; the forward starts at the first layer
    making a fixed value, reading what it needs of the layers before from ``resume``, and only
    values from there on are returned (a near-tie rerun redoes only what the choice changes)."""
    graph = _graph_of(net)
    registry.preflight(graph, [BACKEND])
    arrays = _inputs(graph, feeds)
    wanted = _wanted(graph, outputs)
    keep = set(wanted.values())
    in_shapes = {name: array.shape for name, array in arrays.items()}
    shapes = infer(graph, in_shapes, check_weights=True)
    limit = memory_limit() if max_memory is None else int(max_memory)
    given = {k: np.asarray(v, dtype=np.float64) for k, v in (fixed or {}).items()}
    start, preset = _resumed(graph, given, resume)
    if sink is not None:
        names = {value: name for name, value in wanted.items()}
        need = peak_bytes(graph, shapes, ())
        if need > limit:
            raise _too_big(graph, need, limit, "its values are streamed already")
        emit = (lambda v, a: sink(names[v], a), keep)
        run_graph(graph, {**arrays, **preset}, shapes, set(), given, *emit, start=start)
        return {}
    need = peak_bytes(graph, shapes, keep)
    if need <= limit or start:
        env = run_graph(graph, {**arrays, **preset}, shapes, keep, given, start=start)
    else:
        env = _run_by_image(graph, arrays, shapes, keep, need, limit, given)
    return {n: env[v] for n, v in wanted.items() if v in env and v not in preset}


def _resumed(
    graph: Graph, fixed: Mapping[str, np.ndarray], resume: Mapping[str, np.ndarray] | None
) -> tuple[int, dict[str, np.ndarray]]:
    """Where a resumed run starts (the first layer making a fixed value) and the values it
    reads of the layers before, from ``resume``; (0, {}) for a whole run."""
    if resume is None or not fixed:
        return 0, {}
    start = next(i for i, node in enumerate(graph.nodes) if set(node.outputs) & set(fixed))
    made = {v for node in graph.nodes[:start] for v in node.outputs}
    read = {v for node in graph.nodes[start:] for v in node.inputs if v in made}
    return start, {v: np.asarray(resume[v], dtype=np.float64) for v in read}


def _graph_of(net: object) -> Graph:
    graph = getattr(net, "graph", net)
    if not isinstance(graph, Graph):
        raise TypeError(f"expected a LoadedNet or a Graph, got {type(net).__name__}")
    return graph


def _inputs(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [name for name in graph.inputs if name not in feeds]
    unknown = [name for name in feeds if name not in graph.inputs]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"no input named {', '.join(unknown)}")
        raise CaffeCompatError(
            "; ".join(parts) + f" (the net takes {', '.join(graph.inputs)})", path=graph.path
        )
    arrays = {}
    for name in graph.inputs:
        array = np.asarray(feeds[name])
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise CaffeCompatError(f"input {name!r} holds {array.dtype}, not real numbers")
        arrays[name] = array.astype(np.float64, copy=False)
    return arrays


def _wanted(graph: Graph, outputs: Iterable[str] | None) -> dict[str, str]:
    """Requested name -> value name; every blob of ``net.blobs`` in order when None."""
    if outputs is None:
        blobs = dict.fromkeys(graph.blob_of.get(v, v) for v in graph.values)
        return {blob: graph.final.get(blob, blob) for blob in blobs}
    wanted = {}
    for name in outputs:
        try:
            wanted[name] = graph.resolve(name)
        except KeyError:
            raise CaffeCompatError(
                f"no blob or value named {name!r} in this net", path=graph.path
            ) from None
    return wanted


def run_graph(
    graph: Graph,
    arrays: Mapping[str, np.ndarray],
    shapes: Mapping[str, Shape],
    keep: set[str],
    fixed: Mapping[str, np.ndarray] | None = None,
    sink: Callable[[str, np.ndarray], None] | None = None,
    emit: set[str] | None = None,
    *,
    start: int = 0,
) -> dict[str, np.ndarray]:
    """One pass over the nodes; returns the kept values (and nothing else still alive).
    ``fixed`` values replace what their layer computes (same shape); ``sink`` receives each
    value of ``emit`` once computed; ``start``: the nodes before it are not run (``arrays``
    then holds what the rest reads of them)."""
    fixed = fixed or {}
    env: dict[str, np.ndarray] = dict(arrays)
    last = last_uses(graph)
    free: set[str] = set()  # values whose first axis is a data-dependent row count
    for index, node in enumerate(graph.nodes):
        if index < start:
            continue
        entry = registry.lookup(node.type, BACKEND)
        assert entry is not None  # preflight checked
        ctx = LayerContext(
            tuple(shapes[v] for v in node.inputs),
            tuple(shapes[v] for v in node.outputs),
            _blobs(node),
        )
        where = {"path": graph.path, "layer": node.name, "layer_type": node.type}
        if any(v in free for v in node.inputs):
            ctx = _actual_shapes(node, ctx, [env[v].shape for v in node.inputs], where)
        try:
            with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in Caffe
                result = entry.fn(node, [env[v] for v in node.inputs], ctx)
        except ValueError as exc:
            raise CaffeCompatError(str(exc), **where) from None
        if len(result) != len(node.outputs):
            count = f"gave {len(result)} arrays for {len(node.outputs)} tops"
            raise CaffeCompatError(count, **where)
        info = registry.facts(node.type)
        rows_vary = info.varying_rows or any(v in free for v in node.inputs)
        for value, array, shape in zip(node.outputs, result, ctx.out_shapes):
            array = np.asarray(array, dtype=np.float64)
            if rows_vary and array.shape[1:] == shape[1:]:
                free.add(value)  # Proposal's ROIs and what is computed per ROI
                shape = array.shape
            # Detection rows: their count R depends on the data.
            if array.shape != shape and info.detections is None:
                raise CaffeCompatError(
                    f"computed a {array.shape} top where the shape rule says {shape}", **where
                )
            if value in fixed:
                rows_given = rows_vary and fixed[value].shape[1:] == array.shape[1:]
                if fixed[value].shape != array.shape and not rows_given:
                    given = f"{fixed[value].shape} for top {value!r}, computed {array.shape}"
                    raise CaffeCompatError(f"a fixed value of the wrong shape: {given}", **where)
                array = fixed[value]
            env[value] = array
            if sink is not None and emit is not None and value in emit:
                sink(value, array)
        for value in (*node.inputs, *node.outputs):
            if last.get(value) == index and value not in keep:
                env.pop(value, None)
    return env


def layer_forward(node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """One layer in float64 on the bottoms given, at their shapes: verify recomputes a layer
    whose rows depend on the data (Proposal) from a back end's own bottoms."""
    entry = registry.lookup(node.type, BACKEND)
    rule = registry.lookup(node.type, "shape")
    assert entry is not None and rule is not None  # preflight checked
    in_shapes = tuple(tuple(a.shape) for a in inputs)
    outs = tuple(tuple(s) for s in rule.fn(node, list(in_shapes)).outputs)
    with np.errstate(all="ignore"):
        result = entry.fn(node, list(inputs), LayerContext(in_shapes, outs, _blobs(node)))
    return [np.asarray(a, dtype=np.float64) for a in result]


def _blobs(node: Node) -> tuple[np.ndarray, ...]:
    """The layer's blobs in float64; a large one of a ``float32_weights`` type as stored (its
    reference casts it a slab at a time, _base.weight_rows)."""
    as_stored = registry.facts(node.type).float32_weights
    return tuple(
        np.asarray(b)
        if as_stored and np.size(b) >= LARGE_BLOB and np.asarray(b).dtype == np.float32
        else np.asarray(b, dtype=np.float64)
        for b in node.blobs
    )


def _actual_shapes(
    node: Node, ctx: LayerContext, in_shapes: list[Shape], where: dict
) -> LayerContext:
    """The layer's context at the row count its bottoms really have (after Proposal)."""
    rule = registry.lookup(node.type, "shape")
    assert rule is not None
    try:
        outs = rule.fn(node, list(in_shapes)).outputs
    except ValueError as exc:
        raise CaffeCompatError(str(exc), **where) from None
    return LayerContext(tuple(in_shapes), tuple(tuple(s) for s in outs), ctx.blobs)


def _too_big(graph: Graph, need: int, limit: int, why: str) -> MemoryBudgetError:
    return MemoryBudgetError(
        f"the float64 reference forward needs {need} bytes ({need / 2**30:.2f} GiB), over the "
        f"limit of {limit} bytes ({limit / 2**30:.2f} GiB), and {why}; pass a larger "
        "max_memory or fewer images",
        path=graph.path,
    )


def _run_by_image(
    graph: Graph,
    arrays: Mapping[str, np.ndarray],
    shapes: Mapping[str, Shape],
    keep: set[str],
    need: int,
    limit: int,
    fixed: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The same forward one image at a time, merged; refused when that would change results."""
    batches = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if len(batches) != 1 or None in batches:
        raise _too_big(graph, need, limit, "the inputs share no batch axis to split")
    (batch,) = batches
    if batch < 2:
        raise _too_big(graph, need, limit, "a single image cannot be split further")
    single = single_shapes(graph, {n: a.shape for n, a in arrays.items()})
    if isinstance(single, str):
        raise _too_big(graph, need, limit, single)
    split = split_roles(graph, shapes, single, batch)
    if split.reason is not None:
        raise _too_big(graph, need, limit, f"image-by-image runs would differ: {split.reason}")
    sizes = value_bytes(graph, shapes)
    merged_bytes = sum(sizes[v] for v in keep if split.roles[v] != CONST)
    one = peak_bytes(graph, single, keep) + merged_bytes
    if one > limit:
        raise _too_big(graph, need, limit, f"even one image at a time needs {one} bytes")
    merged: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {}
    for i in range(batch):
        one_fixed = {n: a[i : i + 1] for n, a in (fixed or {}).items()}
        part = run_graph(
            graph, {n: a[i : i + 1] for n, a in arrays.items()}, single, keep, one_fixed
        )
        for value in keep:
            role = split.roles[value]
            if role == BATCH:
                if value not in merged:
                    merged[value] = np.empty(shapes[value], dtype=np.float64)
                merged[value][i : i + 1] = part[value]
            elif role == CONST:
                merged.setdefault(value, part[value])
            else:
                rows.setdefault(value, []).append(_renumber(part[value], i))
    for value, parts in rows.items():
        merged[value] = _merge_detections(parts)
    return merged


def _renumber(rows: np.ndarray, image: int) -> np.ndarray:
    flat = rows.reshape(-1, rows.shape[-1]).copy()
    flat[:, 0] = image
    return flat


def _merge_detections(parts: list[np.ndarray]) -> np.ndarray:
    """Caffe's batch top: every kept row in image order, or one placeholder row per image when
    no image kept anything (a placeholder row has label -1; a real one never does)."""
    found = [p for p in parts if (p[:, 1] != -1).any()]
    rows = np.concatenate(found) if found else np.concatenate(parts)
    return rows.reshape(1, 1, -1, rows.shape[-1])
