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


def _deflate_bomb(path, count: int) -> None:
    """One deflate dataset of ``count`` zeros, written chunk by chunk: about 1000:1, within
    what compression can honestly hold, so only its declared size can refuse it."""
    chunk = 1 << 20
    with h5py.File(path, "w") as handle:
        handle.create_group("diff")
        data = handle.create_dataset(
            "data/fc/0", shape=(count,), dtype="f4", chunks=(chunk,), compression="gzip"
        )
        zeros = np.zeros(chunk, np.float32)
        for start in range(0, count, chunk):
            data[start : start + chunk] = zeros[: count - start]


def test_a_compressed_dataset_is_refused_by_its_declared_size(tmp_path):
    import tracemalloc

    from caffe_compat.errors import MemoryBudgetError

    path = tmp_path / "bomb.h5"
    _deflate_bomb(path, 32 << 20)  # 128 MiB of float32 zeros
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(MemoryBudgetError) as info:
            read_weights(path, max_memory="16M")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # nothing the size of the dataset was allocated
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "128 MiB of values declared" in message and "16 MiB" in message
    assert read_weights(path, max_memory="1G").blobs["fc"][0].shape == (32 << 20,)


def test_verify_refuses_the_bomb_before_reading_it(tmp_path, capsys):
    from caffe_compat.cli.main import main

    net = tmp_path / "net.prototxt"
    net.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        "inner_product_param { num_output: 2 } }\n"
    )
    path = tmp_path / "bomb.h5"
    _deflate_bomb(path, 16 << 20)
    for command in (["verify", net, path], ["convert", net, path, "-o", tmp_path / "m"]):
        code = main([*map(str, command), "--max-memory", "8M"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{path}: reading its datasets (64 MiB of values declared)" in err
