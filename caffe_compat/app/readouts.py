"""Turning class probabilities into the numbers an application reports."""

from __future__ import annotations

import numpy as np


def expected_age(prob: np.ndarray) -> np.ndarray | float:
    """DEX's age estimate: ``sum_i i * p_i`` over the 101 classes (ages 0..100).

    Rothe et al. report this softmax expectation rather than the argmax: it is smoother and more
    accurate. ``prob`` is one vector (K,) or a batch (N, K) / (N, K, 1, 1) as Caffe returns it;
    the result is a float or one value per sample.
    """
    array = np.asarray(prob, dtype=np.float64)
    if array.ndim == 1:
        return float(array @ np.arange(array.shape[0], dtype=np.float64))
    if array.ndim < 2 or any(d != 1 for d in array.shape[2:]):
        raise ValueError(f"expected (K,), (N, K) or (N, K, 1, 1) probabilities, got {array.shape}")
    rows = array.reshape(array.shape[0], array.shape[1])
    return rows @ np.arange(rows.shape[1], dtype=np.float64)
