"""Reference arrays (.npz) are untrusted files: what their headers declare is checked against
what each member holds and against the memory budget before any array is allocated."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest

from caffe_compat.errors import CaffeCompatError, MemoryBudgetError
from caffe_compat.verify.stored import load_reference_npz


def npz_with(path, name: str, header: dict, body: bytes) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.npy", buffer.getvalue() + body)


def test_a_header_claiming_ten_billion_values_is_refused_without_allocating(tmp_path):
    path = tmp_path / "forged.npz"
    npz_with(path, "prob", {"descr": "<f4", "fortran_order": False, "shape": (10**10,)}, bytes(16))
    tracemalloc.start()
    try:
        with pytest.raises(CaffeCompatError) as info:
            load_reference_npz(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "prob.npy declares (10000000000,) float32 values but holds 16 bytes" in message


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "pickle.npz"
    npz_with(path, "x", {"descr": "|O", "fortran_order": False, "shape": (1,)}, bytes(64))
    with pytest.raises(CaffeCompatError, match="Python objects"):
        load_reference_npz(path)


def test_declared_arrays_must_fit_the_budget(tmp_path):
    path = tmp_path / "big.npz"
    np.savez_compressed(path, prob=np.zeros(16 << 20, np.float32))  # 64 MiB, a few KiB stored
    with pytest.raises(MemoryBudgetError, match="the reference arrays needs 64 MiB"):
        load_reference_npz(path, max_memory="16M")
    assert load_reference_npz(path, max_memory="1G")["prob"].shape == (16 << 20,)


def test_honest_files_and_junk(tmp_path):
    path = tmp_path / "ok.npz"
    np.savez(path, a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.ones(2))
    found = load_reference_npz(path)
    assert found["a"].shape == (2, 3) and found["b"].dtype == np.float64
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CaffeCompatError, match=r"not a readable \.npz"):
        load_reference_npz(junk)
