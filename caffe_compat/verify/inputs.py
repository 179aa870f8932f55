"""Deterministic test inputs that look like photographs to a CNN, for synthesis and verify.

Random smooth colour fields with edges and texture, in 0..255 like decoded images; callers
subtract a mean (the net's own, or per-channel constants) to get what Caffe nets are fed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from .. import registry

if TYPE_CHECKING:
    from ..ir.graph import Graph

# Mean BGR pixel of the Adience training faces (the released mean.binaryproto); a fair default
# for natural images.
DEFAULT_BGR_MEAN = (78.4263377603, 87.7689143744, 114.895847746)


def _smooth(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Bilinear upsampling of a coarse random grid: a smooth field in [0, 1]."""
    grid = rng.random((cells + 1, cells + 1))
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def synthetic_images(n: int, channels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``n`` image-like arrays (N, C, H, W), float32 in [0, 255], different for every index."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, channels, height, width), dtype=np.float32)
    for i in range(n):
        cells = int(rng.integers(2, 9))
        base = _smooth(rng, height, width, cells)
        for c in range(channels):
            tint = _smooth(rng, height, width, int(rng.integers(1, 5)))
            detail = rng.normal(0.0, 0.04 + 0.06 * rng.random(), (height, width))
            image = 0.55 * base + 0.35 * tint + detail
            image = image * rng.uniform(0.6, 1.4) + rng.uniform(-0.3, 0.3)
            out[i, c] = np.clip(image, 0.0, 1.0) * 255.0
    return out


def feed_batch(graph: Graph, wanted: int) -> tuple[int, str | None]:
    """The batch synthetic inputs may have: ``wanted``, or the declared batch (and why) when
    the net computes across its batch axis (see ``ir.infer.batch_dependence``)."""
    from ..ir.infer import batch_dependence

    why = batch_dependence(graph)
    if why is None:
        return wanted, None
    first = next(iter(graph.inputs.values()))
    return first[0], why


def index_inputs(graph: Graph) -> dict[str, int]:
    """Inputs that a layer reads as row indices (its ``index_rows`` fact: Embed), with the number
    of rows: synthetic values for them must be integer ids below it (any other value is out of
    Caffe's table)."""
    ids: dict[str, int] = {}
    for node in graph.nodes:
        index_rows = registry.facts(node.type).index_rows
        if index_rows is not None:
            rows = index_rows(node)
            for value in node.inputs:
                if value in graph.inputs:
                    ids[value] = min(rows, ids.get(value, rows))
    return ids


Maker = Callable[[tuple[int, ...], "tuple[int, ...] | None", np.random.Generator], np.ndarray]


def structured_inputs(graph: Graph) -> dict[str, Maker]:
    """Inputs that a layer reads as something other than an image (its ``input_values`` fact:
    ROI boxes, ``im_info``), with the function that makes valid values for them."""
    makers: dict[str, Maker] = {}
    for node in graph.nodes:
        make = registry.facts(node.type).input_values
        if make is None:
            continue
        for bottom, value in enumerate(node.inputs):
            if value in graph.inputs and value not in makers:
                probe = make(node, bottom, graph.inputs[value], None, np.random.default_rng(0))
                if probe is not None:
                    makers[value] = partial(make, node, bottom)
    return makers


def feeds_for(
    shapes: dict[str, tuple[int, ...]],
    n: int | None,
    seed: int = 0,
    mean: tuple[float, ...] | None = None,
    ids: Mapping[str, int] | None = None,
    makers: Mapping[str, Maker] | None = None,
) -> dict[str, np.ndarray]:
    """One batch of ``n`` inputs per net input (None: each input's declared axis 0, for a net
    fixed to its declared batch whose inputs differ there, such as time x streams beside
    images): integer ids below ``ids[name]`` for index inputs (see ``index_inputs``), the layer's
    own valid values for structured inputs (``makers``, see ``structured_inputs``: ROIs inside
    the largest 4-D input), mean-subtracted images for 3-channel 4-D inputs, image-like fields
    for other 4-D inputs, standard normal otherwise."""
    feeds: dict[str, np.ndarray] = {}
    declared = n is None  # a net fixed to its declared batch: each input at its own axis 0
    pictures = [(s[0] if declared else n, *s[1:]) for s in shapes.values() if len(s) == 4]
    image = max(pictures, key=lambda s: s[2] * s[3], default=None)  # the largest 4-D input
    for index, (name, shape) in enumerate(shapes.items()):
        count = shape[0] if declared else n
        assert count is not None
        if makers and name in makers:
            rng = np.random.default_rng(seed + 7919 * index)
            feeds[name] = np.asarray(makers[name]((count, *shape[1:]), image, rng), np.float32)
        elif ids and name in ids:
            rng = np.random.default_rng(seed + 7919 * index)
            feeds[name] = rng.integers(0, ids[name], (count, *shape[1:])).astype(np.float32)
        elif len(shape) == 4:
            images = synthetic_images(count, shape[1], shape[2], shape[3], seed + 7919 * index)
            centre = mean if mean is not None and len(mean) == shape[1] else None
            if centre is None:
                centre = DEFAULT_BGR_MEAN if shape[1] == 3 else (float(images.mean()),) * shape[1]
            feeds[name] = images - np.asarray(centre, dtype=np.float32)[None, :, None, None]
        else:
            rng = np.random.default_rng(seed + 7919 * index)
            feeds[name] = rng.standard_normal((count, *shape[1:])).astype(np.float32)
    return feeds
