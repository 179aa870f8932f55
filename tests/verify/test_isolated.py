"""A judge run in a child process: its arrays come back whole, its exception as a line, its
crash (a signal) as ChildFailed, never the end of this process."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from caffe_compat.verify.isolated import ChildFailed, run_isolated

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="a platform feature: fork")


def _arrays(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {
        "big": rng.standard_normal((3, 64, 130, 17)).astype(np.float32),  # over a pipe's buffer
        "ints": np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2],  # not contiguous
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 7), np.float32),
    }


def test_arrays_come_back_whole():
    found = run_isolated(_arrays, 3)
    expected = _arrays(3)
    assert list(found) == list(expected)
    for name, array in expected.items():
        assert found[name].dtype == array.dtype and found[name].shape == array.shape
        np.testing.assert_array_equal(found[name], array)


def _raises() -> dict[str, np.ndarray]:
    raise ValueError("first line\nthe layer cannot run")


def _crashes() -> dict[str, np.ndarray]:
    os.kill(os.getpid(), signal.SIGSEGV)
    return {}


def test_an_exception_or_a_crash_in_the_child_is_one_line_here():
    with pytest.raises(ChildFailed, match="ValueError: the layer cannot run"):
        run_isolated(_raises)
    with pytest.raises(ChildFailed, match=r"stopped with signal 11 \(SIGSEGV\)"):
        run_isolated(_crashes)
    assert run_isolated(_arrays, 1)["big"].shape == (3, 64, 130, 17)  # this process goes on
