"""HDF5 weights that point outside themselves (external storage, external and soft links, virtual
datasets, plugin filters) are refused before any data is read; honest layouts still load."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from caffe_compat.errors import FileFormatError
from caffe_compat.io import read_hdf5, read_weights

SECRET = b"root:x:0:0:root:/root:/bin/bash\n" * 4  # 128 bytes = 32 float32 values


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "passwd"
    path.write_bytes(SECRET)
    return path


def honest(handle: h5py.File) -> None:
    handle.create_dataset("data/conv1/0", data=np.ones((2, 3), np.float32))
    handle.create_group("diff")


def refused(path, *words: str) -> str:
    with pytest.raises(FileFormatError) as info:
        read_weights(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message
    return message


def test_external_raw_storage_is_refused(tmp_path, secret):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        honest(handle)
        handle.create_dataset(
            "data/fc/0", shape=(32,), dtype="f4", external=[(str(secret), 0, len(SECRET))]
        )
    with h5py.File(path, "r") as handle:  # h5py alone reads the other file's bytes
        assert handle["data/fc/0"][()].tobytes() == SECRET
    message = refused(path, "/data/fc/0", "external file", str(secret), 'layer "fc"')
    assert "refused" in message


def test_an_external_link_is_refused(tmp_path, secret):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle.create_dataset("stolen", data=np.frombuffer(SECRET, np.float32))
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        honest(handle)
        handle.create_group("data/fc")
        handle["data/fc/0"] = h5py.ExternalLink(str(other), "/stolen")
    refused(path, '"/data/fc/0" is an external link', str(other))


@pytest.mark.parametrize("where", ["data/fc/0", "data/fc", "data", "diff/x"])
def test_soft_links_are_refused_wherever_they_are(tmp_path, where):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        honest(handle)
        handle.create_dataset("elsewhere/0", data=np.zeros(4, np.float32))
        if where == "data":
            del handle["data"]
        handle[where] = h5py.SoftLink(
            "/elsewhere/0" if where.endswith(("0", "x")) else "/elsewhere"
        )
    refused(path, f'"/{where}" is a soft link')


def test_a_dangling_link_is_refused_not_followed(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        honest(handle)
        handle["data/conv1/1"] = h5py.ExternalLink("/nonexistent/x.h5", "/y")
    refused(path, "external link", "/nonexistent/x.h5")


def test_a_virtual_dataset_is_refused(tmp_path, secret):
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as handle:
        handle.create_dataset("stolen", data=np.frombuffer(SECRET, np.float32))
    layout = h5py.VirtualLayout(shape=(32,), dtype="f4")
    layout[:] = h5py.VirtualSource(str(source), "stolen", shape=(32,))
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        honest(handle)
        handle.create_virtual_dataset("data/fc/0", layout)
    with h5py.File(path, "r") as handle:
        assert handle["data/fc/0"][()].tobytes() == SECRET
    refused(path, "/data/fc/0", "virtual")


def test_a_filter_that_needs_a_plugin_is_refused(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        honest(handle)
        dataset = handle.create_dataset(
            "data/fc/0",
            shape=(4,),
            dtype="f4",
            chunks=(4,),
            compression=32017,
            allow_unknown_filter=True,
        )
        dataset.id.write_direct_chunk((0,), np.zeros(4, np.float32).tobytes())
    refused(path, "filter 32017", "plugin")


def test_honest_layouts_still_load(tmp_path):
    """Contiguous, chunked with the standard filters, and compact datasets are all inside the file."""
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(n).astype(np.float32) for n in (6, 300, 5))
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data/a/0", data=a)
        handle.create_dataset(
            "data/b/0", data=b, chunks=(100,), compression="gzip", shuffle=True, fletcher32=True
        )
        handle.create_dataset("data/b/1", data=b, chunks=(50,), compression="lzf")
        space = h5py.h5s.create_simple((5,))
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        compact = h5py.h5d.create(
            handle.require_group("data/c").id, b"0", h5py.h5t.IEEE_F32LE, space, dcpl=plist
        )
        compact.write(h5py.h5s.ALL, h5py.h5s.ALL, c)
    weights = read_hdf5(path)
    assert np.array_equal(weights.blobs["a"][0], a)
    assert np.array_equal(weights.blobs["b"][0], b) and np.array_equal(weights.blobs["b"][1], b)
    assert np.array_equal(weights.blobs["c"][0], c)


def test_the_refusal_comes_before_any_read(tmp_path, secret, monkeypatch):
    """No dataset of a file with a link in it is ever read, even the honest ones."""
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        honest(handle)
        handle["diff/x"] = h5py.SoftLink("/data/conv1/0")
    reads = []
    original = h5py.Dataset.__getitem__
    monkeypatch.setattr(
        h5py.Dataset,
        "__getitem__",
        lambda self, key: reads.append(self.name) or original(self, key),
    )
    refused(path, "soft link")
    assert reads == []
