"""HDF5 caffemodels (Caffe's snapshot_format: HDF5): exact round trips, Caffe's nested groups for
layer names with '/', and sizes checked against the file before anything is read."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from caffe_compat.errors import BlobError, FileFormatError
from caffe_compat.io import read_hdf5, read_weights, write_hdf5
from caffe_compat.ir.load import load_net


def test_round_trip_is_exact(tmp_path, blobs):
    path = tmp_path / "w.caffemodel.h5"
    write_hdf5(path, blobs)
    weights = read_hdf5(path)
    assert weights.format == "hdf5" and weights.layers == {}
    assert weights.blobs.keys() == blobs.keys()
    for name, arrays in blobs.items():
        assert all(
            a.dtype == np.float32 and a.shape == b.shape and np.array_equal(a, b)
            for a, b in zip(weights.blobs[name], arrays, strict=True)
        )


def test_layout_is_caffes(tmp_path, blobs):
    """/data/<layer>/<index> datasets of float32, and a /diff group, read here by h5py alone."""
    path = tmp_path / "w.h5"
    write_hdf5(path, blobs)
    with h5py.File(path, "r") as handle:
        assert set(handle) == {"data", "diff"}
        assert set(handle["data"]) == {"conv", "fc"}
        assert set(handle["data/conv"]) == {"0", "1"}
        assert handle["data/fc/0"].dtype == np.float32
        assert np.array_equal(handle["data/fc/0"][()], blobs["fc"][0])


def test_layer_names_with_slashes(tmp_path):
    """Caffe's H5Gcreate2 makes "conv1/relu" a group inside "conv1"; both names come back."""
    rng = np.random.default_rng(0)
    blobs = {
        "inception_3a/1x1": [rng.standard_normal((4, 3, 1, 1)).astype(np.float32)],
        "conv1": [rng.standard_normal((2, 3)).astype(np.float32)],
        "conv1/7x7_s2": [rng.standard_normal(5).astype(np.float32), np.zeros(2, np.float32)],
    }
    path = tmp_path / "w.h5"
    write_hdf5(path, blobs)
    with h5py.File(path, "r") as handle:
        assert isinstance(handle["data/conv1/7x7_s2"], h5py.Group)
    weights = read_hdf5(path)
    assert sorted(weights.blobs) == sorted(blobs)
    for name, arrays in blobs.items():
        assert all(np.array_equal(a, b) for a, b in zip(weights.blobs[name], arrays, strict=True))


def test_read_weights_picks_hdf5_by_content(tmp_path, blobs):
    path = tmp_path / "weights.caffemodel"  # the name says binary; the bytes say HDF5
    write_hdf5(path, blobs)
    assert read_weights(path).format == "hdf5"


def test_hdf5_weights_load_with_the_net(tmp_path, small_prototxt, blobs):
    path = tmp_path / "w.h5"
    write_hdf5(path, blobs)
    loaded = load_net(small_prototxt, path)
    assert not loaded.issues
    fc = next(n for n in loaded.graph.nodes if n.name == "fc")
    assert np.array_equal(fc.blobs[0], blobs["fc"][0])


def test_float64_datasets_read_as_float32(tmp_path):
    path = tmp_path / "w.h5"
    values = np.linspace(0.1, 0.7, 6).reshape(2, 3)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data/ip/0", data=values)
    (array,) = read_hdf5(path).blobs["ip"]
    assert array.dtype == np.float32 and np.array_equal(array, values.astype(np.float32))


def _write(path, build):
    with h5py.File(path, "w") as handle:
        build(handle)
    return path


def test_integer_dataset_is_refused(tmp_path):
    path = _write(tmp_path / "w.h5", lambda h: h.create_dataset("data/ip/0", data=np.arange(4)))
    with pytest.raises(BlobError, match=r'w\.h5: layer "ip": blob 0: holds int64 values'):
        read_hdf5(path)


def test_blob_datasets_must_be_numbered(tmp_path):
    def build(handle):
        handle.create_dataset("data/ip/0", data=np.zeros(2, np.float32))
        handle.create_dataset("data/ip/weights", data=np.zeros(2, np.float32))

    with pytest.raises(BlobError, match=r'layer "ip": blob datasets must be named 0\.\.1'):
        read_hdf5(_write(tmp_path / "w.h5", build))


def test_no_data_group(tmp_path):
    path = _write(tmp_path / "w.h5", lambda h: h.create_dataset("x", data=np.zeros(2)))
    with pytest.raises(FileFormatError, match="no /data group"):
        read_hdf5(path)


def test_unallocated_dataset_is_refused_before_reading(tmp_path):
    """A chunked dataset declaring far more than the file stores is not read as fill values."""

    def build(handle):
        handle.create_dataset("data/ip/0", shape=(10**6, 10**6), dtype=np.float32, chunks=(1, 64))

    path = _write(tmp_path / "w.h5", build)
    with pytest.raises(BlobError, match=r'layer "ip": blob 0: shape \[1000000, 1000000\] needs'):
        read_hdf5(path)


def test_compressed_dataset_beyond_any_ratio_is_refused(tmp_path):
    def build(handle):
        handle.create_dataset(
            "data/ip/0",
            shape=(50_000, 50_000),
            dtype=np.float32,
            chunks=(1000, 1000),
            compression="gzip",
            fillvalue=0.0,
        )
        handle["data/ip/0"][:1000, :1000] = 1.0  # one chunk written, the rest unallocated

    path = _write(tmp_path / "w.h5", build)
    with pytest.raises(BlobError, match="more than any compression can hold"):
        read_hdf5(path)


def test_truncated_hdf5(tmp_path, blobs):
    path = tmp_path / "w.h5"
    write_hdf5(path, blobs)
    raw = path.read_bytes()
    for cut in (4, 100, len(raw) // 2, len(raw) - 1):
        cut_path = tmp_path / f"cut{cut}.h5"
        cut_path.write_bytes(raw[:cut])
        with pytest.raises(FileFormatError, match=rf"cut{cut}\.h5: .*truncated") as error:
            read_weights(cut_path)
        assert "\n" not in str(error.value)


def test_corrupt_hdf5_never_escapes_as_a_library_error(tmp_path, blobs):
    path = tmp_path / "w.h5"
    write_hdf5(path, blobs)
    raw = path.read_bytes()
    rng = np.random.default_rng(7)
    for _ in range(200):
        damaged = bytearray(raw)
        for index in rng.integers(0, len(raw), 3):
            damaged[index] = rng.integers(0, 256)
        path.write_bytes(bytes(damaged))
        try:
            read_hdf5(path)
        except FileFormatError as error:
            assert "\n" not in str(error) and str(path) in str(error)
