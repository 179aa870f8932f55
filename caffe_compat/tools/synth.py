"""Synthesised weights in exactly the shapes a net needs, calibrated so outputs vary with input.

Plain He initialisation drives these nets into a softmax that picks the same class for every
input, which would make every parity test built on them prove little. ``calibrated`` (the default)
instead runs a batch of image-like inputs through the net once, layer by layer, and rescales each
convolution and inner product so its outputs are centred with unit spread per channel (heads get a
wider spread, so class scores differ from input to input without saturating); BatchNorm statistics
are set from the batch they see. The scales are rounded to float16 precision so tiny floating-point
differences between machines do not change the weights. Deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .. import registry
from ..budget import Budget, footprint, last_readers, plan_batch, resolve
from ..ir.graph import Graph, Node, Shape
from ..ir.load import LoadedNet
from ..progress import Progress
from ..shapes._synthesis import StartingValues, half_precision
from ..verify.inputs import feed_batch, feeds_for, index_inputs
from .fillers import caffe_fill

METHODS = ("calibrated", "he", "fillers")
HEAD_SPREAD = 1.5  # spread of a head layer's outputs across the calibration batch
MAX_GAIN = 1e4  # largest calibration gain (float16 holds it)
# Beside every blob, the largest layer's blobs are made up to three more times at once: float64
# draws before the float32 cast, the torch copy calibration builds, the float64 rescaled copy.
LARGEST_LAYER_COPIES = 3
# Calibration keeps the values still to be read once, plus float64 copies (2x) of the largest.
CALIBRATION_FLOAT64 = 2


def _he(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return rng.normal(0.0, math.sqrt(2.0 / max(fan_in, 1)), shape).astype(np.float32)


def initial_blobs(
    node: Node,
    shapes: list[Shape],
    rng: np.random.Generator,
    method: str,
    starts: Mapping[str, StartingValues] | None = None,
) -> list[np.ndarray]:
    """Starting values for one layer's blobs (``starts`` overrides them per layer type)."""
    if starts and node.type in starts:
        return starts[node.type](shapes, rng)
    facts = registry.facts(node.type)
    if method == "fillers" and facts.fillers is not None:
        return caffe_fill(node.param, shapes, rng)
    if facts.starting_values is not None:
        return facts.starting_values(shapes, rng)
    return [_he(s, rng) if i == 0 else np.zeros(s, np.float32) for i, s in enumerate(shapes)]


def _heads(graph: Graph) -> set[str]:
    """Affine layers whose outputs reach a net output without passing another affine layer."""
    heads: set[str] = set()
    frontier = list(graph.outputs)
    seen: set[str] = set()
    while frontier:
        value = frontier.pop()
        if value in seen:
            continue
        seen.add(value)
        node = graph.producer(value)
        if node is None:
            continue
        if registry.facts(node.type).rescale is not None:
            heads.add(node.name)
        else:
            frontier.extend(node.inputs)
    return heads


def _calibrate(graph: Graph, seed: int, batch: int, bar: Progress) -> None:
    """One pass in execution order, fixing each affine and BatchNorm layer from what it sees."""
    import torch

    from ..converters.torch._base import TorchContext

    feeds = feeds_for(graph.inputs, batch, seed=seed + 1, ids=index_inputs(graph))
    env: dict[str, torch.Tensor] = {k: torch.from_numpy(v) for k, v in feeds.items()}
    heads = _heads(graph)
    last = last_readers(graph)
    with torch.no_grad():
        for index, node in enumerate(graph.nodes):
            inputs = [env[v] for v in node.inputs]
            info = registry.facts(node.type)
            if info.calibrate is not None and node.blobs:
                info.calibrate(node, [x.double().numpy() for x in inputs])
            build = registry.lookup(node.type, "torch")
            assert build is not None
            module = build.fn(node, TorchContext(graph, node))
            result = module(*inputs)
            top = result[0] if isinstance(result, tuple) else result
            # A top with one axis has no batch or positions to take channel statistics over.
            if info.rescale is not None and node.blobs and top.dim() > 1:
                y = top.double().numpy()
                axis = registry.channel_axis(node, y.ndim)
                axes = tuple(i for i in range(y.ndim) if i != axis)
                mean, std = y.mean(axis=axes), y.std(axis=axes)
                target = HEAD_SPREAD if node.name in heads else 1.0
                # A channel constant over the batch keeps a finite (float16) gain.
                scale = half_precision(np.minimum(target / np.maximum(std, 1e-6), MAX_GAIN))
                info.rescale(node, scale, half_precision(-mean * scale))
                result = build.fn(node, TorchContext(graph, node))(*inputs)
            if isinstance(result, torch.Tensor):
                result = (result,)
            for value, tensor in zip(node.outputs, result):
                env[value] = tensor
            del inputs, result, top
            for value in [v for v in env if last.get(v, -1) <= index]:
                del env[value]  # read by no later layer: calibration keeps only live values
            bar.update()


def synthesize(
    loaded: LoadedNet,
    *,
    seed: int = 0,
    method: str = "calibrated",
    batch: int = 16,
    starts: Mapping[str, StartingValues] | None = None,
    progress: bool = True,
    max_memory: Budget | int | str | None = None,
) -> dict[str, list[np.ndarray]]:
    """Weights for every layer of ``loaded`` (attached to its graph too), by layer name.

    ``starts`` replaces the starting values of chosen layer types before calibration (e.g. Scale
    biases that keep a deep plain ReLU chain mostly active). ``progress`` draws a bar of the
    calibration pass on stderr when it is a terminal. ``max_memory`` (default: half the
    available memory, see ``budget.py``) is checked before any blob is made; the calibration
    batch never shrinks, since the weights depend on it."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    graph = loaded.graph
    batch, _ = feed_batch(graph, batch)  # a net computing across its batch axis: its own
    budget = resolve(max_memory)
    need = footprint(graph, loaded.inference.params)
    weights = need.params + LARGEST_LAYER_COPIES * need.largest_params
    if method == "calibrated":
        plan_batch(
            budget,
            need.streaming(),
            batch,
            fixed=weights + CALIBRATION_FLOAT64 * batch * need.largest_per_item,
            copies=1,
            what="calibrating synthesized weights",
            shrink=False,
        )
    else:
        budget.require(weights, "synthesizing weights")
    rng = np.random.default_rng(seed)
    for node in graph.nodes:
        shapes = loaded.inference.params.get(node.name, [])
        node.blobs = initial_blobs(node, shapes, rng, method, starts) if shapes else []
    if method == "calibrated":
        label = f"synth {graph.name or 'net'}"
        with Progress(len(graph.nodes), label=label, unit="layers", enabled=progress) as bar:
            _calibrate(graph, seed, batch, bar)
    return {node.name: list(node.blobs) for node in graph.nodes if node.blobs}
