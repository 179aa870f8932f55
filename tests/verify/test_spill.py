"""A judge's values on disk (verify's streamed mode): what is read back is what was computed,
rounded to float32 only where float32 holds it, and a disk too small is one line before any
value is written."""

from __future__ import annotations

import shutil
from collections import namedtuple

import numpy as np
import pytest

from caffe_compat.errors import CaffeCompatError
from caffe_compat.verify.spill import SpilledValues, magnitudes, require_disk


def test_values_come_back_as_float32_where_float32_holds_them(tmp_path):
    store = SpilledValues(tmp_path / "judge")
    rng = np.random.default_rng(3)
    small = rng.standard_normal((2, 3, 4, 5)) * 7.0
    huge = np.array([1e39, -2.0])  # beyond float32: kept in float64
    odd = np.array([np.nan, 1.0, -3.0])
    rows = np.arange(6, dtype=np.int64).reshape(2, 3)
    for name, array in (("a", small), ("b@x", huge), ("c", odd), ("d", rows)):
        store.put(name, array)
    assert list(store) == ["a", "b@x", "c", "d"] and len(store) == 4
    assert "a" in store and "z" not in store
    back = store["a"]
    assert back.dtype == np.float32 and back.shape == small.shape
    np.testing.assert_array_equal(back, small.astype(np.float32))
    assert store["b@x"].dtype == np.float64
    np.testing.assert_array_equal(store["b@x"], huge)
    assert store["c"].dtype == np.float64 and np.isnan(store["c"][0])  # nan: never rounded
    np.testing.assert_array_equal(store["d"], rows)
    sizes = magnitudes(store)
    assert float(sizes["a"]) == pytest.approx(np.abs(small).max(), rel=1e-6)
    assert float(sizes["b@x"]) == 1e39
    assert store.written == small.size * 4 + huge.nbytes + odd.nbytes + rows.nbytes
    in_memory = magnitudes({"a": small})
    assert float(in_memory["a"]) == pytest.approx(float(sizes["a"]), rel=1e-6)


def test_a_disk_too_small_is_refused_before_writing(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))
    require_disk(tmp_path, 2**19, "the judge")
    with pytest.raises(CaffeCompatError, match=r"writes 2 MiB of temporary files to .*1 MiB"):
        require_disk(tmp_path, 2**21, "the judge")


def test_the_judge_over_its_memory_when_streamed_is_the_verifications_memory(tmp_path):
    """In memory, a judge over its budget is skipped with the reason (others may judge);
    streamed, it is the only judge, and its MemoryBudgetError goes to verify, which then tries
    a smaller input size."""
    from caffe_compat.errors import MemoryBudgetError
    from caffe_compat.ir.load import load_net
    from caffe_compat.verify.float64 import float64_judge

    path = tmp_path / "net.prototxt"
    path.write_text(
        'input: "data" input_shape { dim: 1 dim: 3 dim: 64 dim: 64 }\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 4 kernel_size: 3 } }\n"
    )
    loaded = load_net(path)
    for node in loaded.graph.nodes:
        node.blobs = [np.zeros((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)]
    feeds = {"data": np.zeros((1, 3, 64, 64), np.float32)}
    found, status = float64_judge(loaded, feeds, ["c"], required=False, max_memory=1000)
    assert found is None and "over the limit" in status
    with pytest.raises(MemoryBudgetError, match="over the limit"):
        float64_judge(
            loaded,
            feeds,
            ["c"],
            required=False,
            max_memory=1000,
            spill=SpilledValues(tmp_path / "spill"),
        )
