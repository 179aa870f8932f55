"""One row of verify's table: the largest absolute difference taken in float64, against the
tolerance; scalars, shape mismatches and non-finite values; one float64 scratch array at most."""

from __future__ import annotations

import tracemalloc

import numpy as np

from caffe_compat.verify.compare import Tolerance, compare


def row(ours, reference, tolerance=None):
    return compare("v", "b", ours, reference, "torch-cpu", "float64", tolerance or Tolerance())


def test_differences_are_taken_in_float64():
    ours = np.array([1.0, 2.0, 3.0], np.float32)
    reference = np.array([1.0, 2.0 + 1e-9, 3.0 - 2.5e-6], np.float64)
    found = row(ours, reference)
    assert abs(found.max_abs - 2.5e-6) < 1e-12 and found.max_ref == 3.0 - 2.5e-6
    assert found.passed


def test_scalars_compare():
    found = row(np.asarray(np.float32(1.5)), np.asarray(2.0))
    assert found.max_abs == 0.5 and found.max_ref == 2.0 and not found.passed


def test_shapes_non_finite_values_and_negative_extremes():
    assert row(np.zeros((2, 3)), np.zeros(6)).passed  # same count: reshaped
    mismatch = row(np.zeros((2, 3)), np.zeros(5))
    assert not mismatch.passed and mismatch.note == "shape [2, 3] vs reference [5]"
    assert row(np.array([np.inf, 0.0]), np.array([0.0, 0.0])).max_abs == float("inf")
    assert row(np.array([-4.0, 1.0]), np.array([-4.0, 1.0])).max_ref == 4.0


def test_one_scratch_array_at_most():
    ours = np.ones(1 << 22, np.float32)  # 16 MiB
    reference = np.ones(1 << 22, np.float64)
    tracemalloc.start()
    try:
        row(ours, reference)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 1.25 * (8 << 22)  # one float64 array the size of the blob, not four
