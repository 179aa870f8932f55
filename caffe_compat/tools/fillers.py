"""Caffe's weight fillers in numpy, and the blobs a layer starts from before any training: what
pycaffe's ``Net`` holds without weights and ``synth --method fillers`` writes.

Which filler starts which blob is each layer type's ``fillers`` fact (the registry), Caffe's
defaults included; a blob no fact names starts from FillerParameter's default, a constant 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import registry
from ..proto import caffe_pb2

FillerParameter = caffe_pb2.FillerParameter


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Caffe's fan-in (count / num) and fan-out (count / channels)."""
    count = math.prod(shape) or 1
    fan_in = count // shape[0] if shape else 1
    fan_out = count // shape[1] if len(shape) > 1 else count
    return max(fan_in, 1), max(fan_out, 1)


def _norm(filler: FillerParameter, shape: tuple[int, ...]) -> float:
    fan_in, fan_out = _fans(shape)
    if filler.variance_norm == FillerParameter.FAN_OUT:
        return fan_out
    if filler.variance_norm == FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def fill(filler: FillerParameter, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """An array filled as Caffe's filler of ``filler.type`` would (same distributions)."""
    kind = filler.type
    if kind == "constant":
        out = np.full(shape, filler.value, dtype=np.float64)
    elif kind == "uniform":
        out = rng.uniform(filler.min, filler.max, shape)
    elif kind == "gaussian":
        out = rng.normal(filler.mean, filler.std, shape)
        if filler.sparse >= 0 and len(shape) >= 1 and shape[0] > 0:
            # Caffe's filler.hpp: probability sparse / shape(0), which it calls num_outputs.
            keep = rng.random(shape) < filler.sparse / shape[0]
            out = out * keep
    elif kind == "positive_unitball":
        out = rng.random(shape)
        rows = out.reshape(shape[0], -1)
        rows /= rows.sum(axis=1, keepdims=True)
    elif kind == "xavier":
        scale = math.sqrt(3.0 / _norm(filler, shape))
        out = rng.uniform(-scale, scale, shape)
    elif kind == "msra":
        out = rng.normal(0.0, math.sqrt(2.0 / _norm(filler, shape)), shape)
    elif kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise ValueError(f"bilinear filler needs a square 4-D blob, got {list(shape)}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        ramp = 1 - np.abs(np.arange(k) / f - c)
        out = np.broadcast_to(ramp[:, None] * ramp[None, :], shape).copy()
    else:
        raise ValueError(f'unknown filler type "{kind}"')
    return out.astype(np.float32)


def caffe_fillers(layer: caffe_pb2.LayerParameter) -> list[FillerParameter]:
    """The filler of each blob of ``layer``, in order, as its type declares them (may be
    fewer than the blobs, or none for a type that declares no fillers)."""
    declared = registry.facts(layer.type).fillers
    return list(declared(layer)) if declared is not None else []


def caffe_fill(
    layer: caffe_pb2.LayerParameter, shapes: Sequence[tuple[int, ...]], rng: np.random.Generator
) -> list[np.ndarray]:
    """Every blob of ``layer`` as Caffe's ``LayerSetUp`` starts it (float32)."""
    fillers = caffe_fillers(layer)
    return [
        fill(fillers[i], tuple(shape), rng) if i < len(fillers) else np.zeros(shape, np.float32)
        for i, shape in enumerate(shapes)
    ]
