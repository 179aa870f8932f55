"""A caffemodel's parsed arrays as a signed cache entry: bit-identical views of one read, and a
manifest that cannot size an allocation or reach outside its payload even when signed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from caffe_compat.cache import weights as cache_weights
from caffe_compat.cache.entries import _sign
from caffe_compat.cache.home import cache_key
from caffe_compat.cache.weights import cached_weights, is_converted, weights_entry
from caffe_compat.io import read_weights, write_caffemodel
from caffe_compat.io.identity import file_identity
from caffe_compat.io.weights import Weights
from caffe_compat.io.writer import definitions_only
from caffe_compat.ir.load import load_net

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 5 } }
"""
MODEL = "tiny"


def blobs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "conv": [rng.standard_normal((4, 3, 3, 3), np.float32), rng.standard_normal(4, np.float32)],
        "ip": [rng.standard_normal((5, 144), np.float32), rng.standard_normal(5, np.float32)],
    }


@pytest.fixture
def net(tmp_path):
    """(home, weights path, identity) of a tiny net's caffemodel in the cache layout."""
    home = tmp_path / "home"
    (home / MODEL).mkdir(parents=True)
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(NET)
    path = home / MODEL / "tiny.caffemodel"
    write_caffemodel(path, definitions_only(load_net(prototxt).net.layer), blobs())
    return home, path, file_identity(path)


def same(got: Weights, want: Weights) -> None:
    assert list(got.blobs) == list(want.blobs)
    for name in want.blobs:
        for a, b in zip(got.blobs[name], want.blobs[name], strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def test_a_second_load_is_a_read_of_bit_identical_views(net, monkeypatch):
    home, path, identity = net
    first = cached_weights(home, MODEL, path, identity)
    assert not first.from_cache and first.stored and first.entry.suffix == ".bin"
    monkeypatch.setattr(cache_weights, "read_weights", lambda p: pytest.fail("parsed again"))
    second = cached_weights(home, MODEL, path, identity)
    assert second.from_cache and second.entry == first.entry
    same(second.weights, read_weights(path))
    assert second.weights.format == "caffemodel-v2"
    conv = second.weights.blobs["conv"][0]
    assert conv.base is not None and conv.flags.writeable  # a view of the one read buffer
    assert conv.ctypes.data % 4 == 0


def test_float64_float16_and_empty_arrays_round_trip(net):
    home, path, identity = net
    odd = Weights(
        str(path),
        "hdf5",
        {
            "a": [np.arange(6, dtype=np.float64).reshape(2, 3), np.zeros((0, 4), np.float32)],
            "b": [np.float16([1.5, -2]), np.ones((), np.float32)],
        },
        net_name="odd",
    )
    entry = weights_entry(home, MODEL, path, identity)
    placed, meta = cache_weights._plan(odd)
    cache_weights.store_or_warn(entry, {"weights": identity}, cache_weights._writer(placed), meta)
    same(cache_weights.load_weights(entry, path, identity), odd)


def resign(entry, change) -> None:
    """Edit the record's manifest and sign it with the cache's key, as only a holder of the key
    could: what the manifest checks must catch on their own."""
    record = json.loads(entry.record.read_text())
    change(record["body"]["meta"])
    record["mac"] = _sign(cache_key(entry.home, create=False), record["body"])
    entry.record.write_text(json.dumps(record))


def conv(meta) -> list:
    """The manifest's item for conv's first array: [dtype, shape, offset]."""
    (items,) = [items for name, items in meta["layers"] if name == "conv"]
    return items[0]


def _nested(meta) -> None:
    deep: list = []
    for _ in range(500):
        deep = [deep]
    meta["layers"] = [["conv", [deep]]]


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: conv(m).__setitem__(1, [10**10]), "reaches past"),
        (lambda m: conv(m).__setitem__(1, [2**62, 2**62]), "reaches past"),
        (lambda m: conv(m).__setitem__(2, -8), "has no offset"),
        (lambda m: conv(m).__setitem__(0, "|O"), "is not [dtype, shape, offset]"),
        (lambda m: conv(m).__setitem__(1, [1.5]), "something else than sizes"),
        (lambda m: conv(m).__setitem__(1, [1] * 40), "at most 32"),
        (lambda m: m["layers"].append(m["layers"][-1]), "repeated"),
        (lambda m: m.__setitem__("layers", [1, 2]), "is not [name, arrays]"),
        (_nested, "is not [dtype, shape, offset]"),
        (lambda m: m.pop("net_name"), "no weights format or net name"),
    ],
    ids=[
        "1e10-floats",
        "overflow",
        "offset",
        "object",
        "float-dim",
        "dims",
        "repeat",
        "list",
        "nested",
        "no-name",
    ],
)
def test_a_signed_manifest_that_does_not_fit_is_rebuilt(net, caplog, change, words):
    home, path, identity = net
    entry = weights_entry(home, MODEL, path, identity)
    cached_weights(home, MODEL, path, identity)
    resign(entry, change)
    with caplog.at_level("WARNING", logger="caffe_compat.cache"):
        rebuilt = cached_weights(home, MODEL, path, identity)
    assert not rebuilt.from_cache and rebuilt.stored
    assert len(caplog.records) == 1 and words in caplog.text, caplog.text
    same(rebuilt.weights, read_weights(path))
    assert cached_weights(home, MODEL, path, identity).from_cache  # the rebuilt entry serves


def _npy_claiming(count: int) -> bytes:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({count},), }}"
    header += " " * (118 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 16


def test_the_former_npz_layout_is_never_opened_and_is_removed(net):
    """Issue 21: an .npz of the former layout with a .npy header claiming 10^10 floats (and its
    .sha256 record rewritten to match) was read with np.load; such files are now ignored and
    removed when the entry is written."""
    import hashlib
    import zipfile

    home, path, identity = net
    folder = home / MODEL / "converted"
    folder.mkdir()
    npz = folder / f"tiny.{identity.git_blob}.npz"
    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("manifest.npy", _npy_claiming(10**10))
        archive.writestr("b0.npy", _npy_claiming(10**10))
    sidecar = npz.with_name(npz.name + ".sha256")
    sidecar.write_text(hashlib.sha256(npz.read_bytes()).hexdigest() + "\n")
    got = cached_weights(home, MODEL, path, identity)
    assert not got.from_cache and got.stored
    assert sorted(p.suffix for p in folder.iterdir()) == [".bin", ".json"]


LIMITED = r"""
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (2048 << 20, resource.RLIM_INFINITY))
from caffe_compat.cache.weights import cached_weights
from caffe_compat.io.identity import file_identity
home, path = Path(sys.argv[1]), Path(sys.argv[2])
got = cached_weights(home, "tiny", path, file_identity(path))
print(got.from_cache, sorted(got.weights.blobs))
"""


def test_a_manifest_claiming_1e10_floats_allocates_nothing(net):
    """The signed manifest's 10^10 floats are refused by arithmetic, under a 2 GiB address-space
    limit where allocating them (40 GB) would be a MemoryError."""
    home, path, identity = net
    entry = weights_entry(home, MODEL, path, identity)
    cached_weights(home, MODEL, path, identity)
    resign(entry, lambda m: conv(m).__setitem__(1, [10**10]))
    done = subprocess.run(
        [sys.executable, "-c", LIMITED, str(home), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        cwd=home,  # not the checkout: the installed package must be the one imported
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == "False ['conv', 'data', 'ip']"
    assert "reaches past" in done.stderr


def test_is_converted_reads_records_only_and_never_fails(net, tmp_path):
    home, path, identity = net
    size = identity.size
    assert not is_converted(home, MODEL, path, size)
    got = cached_weights(home, MODEL, path, identity)
    assert is_converted(home, MODEL, path, size)
    assert not is_converted(home, MODEL, path, size + 1)
    record = got.entry.with_suffix(".json")
    good = record.read_bytes()
    for planted in (b"[1, 2]", b"[" * 200_000, b'{"body": {}, "mac": "x"}', b"\xff"):
        record.write_bytes(planted)
        assert not is_converted(home, MODEL, path, size)
    record.write_bytes(good)
    got.entry.write_bytes(got.entry.read_bytes()[:-1])  # size checked, content is not hashed
    assert not is_converted(home, MODEL, path, size)
