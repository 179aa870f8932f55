"""Starting-value helpers the layer families declare for weight synthesis (numpy only)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ir.graph import Shape

StartingValues = Callable[[list[Shape], np.random.Generator], list[np.ndarray]]


def half_precision(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to float16 precision (as float64): calibrated weights do not change
    with the last bits a machine's arithmetic gives."""
    return values.astype(np.float16).astype(np.float64)


def positive(low: float, high: float) -> StartingValues:
    """First blob uniform in [low, high) (a positive multiplier), later blobs small biases."""

    def start(shapes: list[Shape], rng: np.random.Generator) -> list[np.ndarray]:
        return [rng.uniform(low, high, s).astype(np.float32) for s in shapes[:1]] + [
            rng.normal(0.0, 0.1, s).astype(np.float32) for s in shapes[1:]
        ]

    return start


def normal(std: float) -> StartingValues:
    """Every blob normal around 0 with ``std``."""

    def start(shapes: list[Shape], rng: np.random.Generator) -> list[np.ndarray]:
        return [rng.normal(0.0, std, s).astype(np.float32) for s in shapes]

    return start


def scale_rows(weight: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    """``weight`` with its slices along ``axis`` multiplied by ``scale``.

    A float32 weight times float16-exact scales (calibration's, see ``half_precision``) is done
    in float32: the exact product has at most 35 significant bits, so one float32 rounding of it
    equals the float64 product cast to float32, without a float64 copy of the largest layer.
    Other scales (BatchNorm folding) go through float64."""
    shape = [1] * weight.ndim
    shape[axis] = -1
    exact = np.array_equal(half_precision(scale), scale) and np.all(np.isfinite(scale))
    if weight.dtype == np.float32 and exact:
        return weight * scale.astype(np.float32).reshape(shape)
    return weight.astype(np.float64) * scale.reshape(shape)


def rescale_blobs(
    node: object, weight: np.ndarray, scale: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Store the rescaled weight and ``bias * scale + shift``; returns the shift applied, zeros
    for a layer without a bias (``bias_term: false``), which can only be scaled."""
    blobs = node.blobs  # type: ignore[attr-defined]
    blobs[0] = weight.astype(np.float32, copy=False)
    if len(blobs) > 1:
        blobs[1] = (blobs[1].astype(np.float64) * scale + shift).astype(np.float32)
        return shift
    return np.zeros_like(shift)


STATS_SLAB = 1 << 22  # float64 values one slab of channel statistics takes (32 MiB)


def channel_moments(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance (float64) of float32 ``x`` over every axis but ``axis``,
    computed on float64 copies of a few channels at a time (at most STATS_SLAB values each, or
    one channel): a big top never gets a whole float64 copy."""
    moved = np.moveaxis(x, axis, 0)
    channels = moved.shape[0]
    per = max(1, moved[0].size if channels else 1)
    step = max(1, STATS_SLAB // per)
    mean, var = np.empty(channels), np.empty(channels)
    for start in range(0, channels, step):
        # One float64 copy, laid out channel by channel, so the reshape needs no second one.
        slab = np.ascontiguousarray(moved[start : start + step], dtype=np.float64)
        slab = slab.reshape(slab.shape[0], -1)
        mean[start : start + step] = slab.mean(axis=1)
        var[start : start + step] = slab.var(axis=1)
    return mean, var
