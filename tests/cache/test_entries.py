"""Signed cache entries: served only when the record's signature, the sources' identities and
the payload's hash all match; anything else (an entry copied from other files, edited, damaged,
hostile) is one warning and None, never an exception and never an allocation sized by it."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest

from caffe_compat.cache import entries
from caffe_compat.cache.entries import (
    Entry,
    load_entry,
    make_entry,
    prune,
    store_entry,
    store_or_warn,
)
from caffe_compat.cache.home import KEY_FILE, cache_key
from caffe_compat.io.identity import file_identity

PAYLOAD = bytes(range(256)) * 400


def sources(folder, text: bytes = b"one") -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.prototxt").write_bytes(b"layer {}" + text)
    (folder / "net.caffemodel").write_bytes(b"weights" + text)
    return {
        "prototxt": file_identity(folder / "net.prototxt"),
        "weights": file_identity(folder / "net.caffemodel"),
    }


def stored(home, ids, payload: bytes = PAYLOAD, meta=None) -> Entry:
    entry = make_entry(home, ("dnn",), "net", ids, kind="test", suffix=".bin")
    store_entry(entry, ids, lambda out: out.write(payload), meta or {"names": ["a", "b"]})
    return entry


def rejected(entry, ids, caplog, words: str) -> None:
    caplog.clear()
    with caplog.at_level("WARNING", logger="caffe_compat.cache"):
        assert load_entry(entry, ids) is None
    assert len(caplog.records) == 1, caplog.text
    text = caplog.records[0].getMessage()
    assert words in text and str(entry.record) in text and "rebuilding it" in text


def test_a_stored_entry_loads_and_follows_the_umask(tmp_path, caplog):
    ids = sources(tmp_path / "src")
    previous = os.umask(0o027)
    try:
        entry = stored(tmp_path / "home", ids)
    finally:
        os.umask(previous)
    with caplog.at_level("WARNING", logger="caffe_compat.cache"):
        payload, meta = load_entry(entry, ids)
    assert bytes(payload) == PAYLOAD and meta == {"names": ["a", "b"]} and not caplog.records
    for path in (entry.payload, entry.record):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert re.fullmatch(r"net\.[0-9a-f]{32}", entry.stem)
    body = json.loads(entry.record.read_text())["body"]
    assert body["sources"]["weights"] == {
        "size": ids["weights"].size,
        "sha256": ids["weights"].sha256,
    }


def test_an_absent_entry_is_silent(tmp_path, caplog):
    ids = sources(tmp_path / "src")
    entry = make_entry(tmp_path / "home", ("dnn",), "net", ids, kind="test", suffix=".bin")
    with caplog.at_level("DEBUG", logger="caffe_compat.cache"):
        assert load_entry(entry, ids) is None
    assert not caplog.records


def test_other_sources_kinds_and_versions_get_other_names(tmp_path):
    ids, other = sources(tmp_path / "a"), sources(tmp_path / "b", b"two")
    home = tmp_path / "home"
    names = {
        make_entry(home, (), "net", ids, kind="test", suffix=".bin").stem,
        make_entry(home, (), "net", other, kind="test", suffix=".bin").stem,
        make_entry(home, (), "net", ids, kind="other", suffix=".bin").stem,
    }
    assert len(names) == 3
    assert make_entry(home, (), "../.x/y", ids, kind="k", suffix=".b").stem.startswith("_.x_y.")


def test_an_entry_copied_over_another_is_never_served(tmp_path, caplog):
    """Issue 21 #2: net B's payload and record copied over net A's entry."""
    home = tmp_path / "home"
    ids_a, ids_b = sources(tmp_path / "a"), sources(tmp_path / "b", b"two")
    a, b = stored(home, ids_a, b"A" * 1000), stored(home, ids_b, b"B" * 1000)
    a.payload.write_bytes(b.payload.read_bytes())
    a.record.write_bytes(b.record.read_bytes())
    rejected(a, ids_a, caplog, "was made from other files than these prototxt and weights files")


def test_an_edited_payload_is_caught_by_its_hash(tmp_path, caplog):
    ids = sources(tmp_path / "src")
    entry = stored(tmp_path / "home", ids)
    data = bytearray(entry.payload.read_bytes())
    data[len(data) // 2] ^= 1
    entry.payload.write_bytes(bytes(data))
    rejected(entry, ids, caplog, "content changed since it was written")
    entry.payload.write_bytes(bytes(data[:-1]))
    rejected(entry, ids, caplog, f"has a {len(data) - 1}-byte payload; its record says {len(data)}")


def test_a_payload_and_record_rewritten_together_are_caught_by_the_signature(tmp_path, caplog):
    """Issue 21 #4: a writer who rewrites the payload and the hash beside it."""
    ids = sources(tmp_path / "src")
    entry = stored(tmp_path / "home", ids)
    evil = b"E" * len(PAYLOAD)
    entry.payload.write_bytes(evil)
    record = json.loads(entry.record.read_text())
    record["body"]["payload"]["sha256"] = __import__("hashlib").sha256(evil).hexdigest()
    entry.record.write_text(json.dumps(record))
    rejected(entry, ids, caplog, "is not signed by this cache's key")


@pytest.mark.parametrize(
    "record, words",
    [
        ("[" * 200_000, "RecursionError"),  # issue 21: nested brackets
        ("[1, 2]", "not a cache record"),
        ('{"body": [], "mac": "x"}', "not a cache record"),
        ('{"body": {"x": 1e400}, "mac": "00"}', "Out of range float"),
        ("\xff\xfe", "cannot be read"),
        ("", "cannot be read"),
    ],
    ids=["nested", "list", "body-list", "huge-number", "not-utf8", "empty"],
)
def test_a_hostile_record_is_one_warning(tmp_path, caplog, record, words):
    ids = sources(tmp_path / "src")
    entry = stored(tmp_path / "home", ids)
    entry.record.write_bytes(record.encode("latin-1"))
    rejected(entry, ids, caplog, words)


def test_a_signed_record_of_another_kind_or_version_is_not_served(tmp_path, caplog, monkeypatch):
    ids = sources(tmp_path / "src")
    entry = stored(tmp_path / "home", ids)
    other = Entry(entry.home, entry.parts, entry.stem, entry.suffix, "other-kind")
    rejected(other, ids, caplog, "holds a test entry, not other-kind")
    monkeypatch.setattr(entries, "__version__", "0.0.0-other")
    rejected(entry, ids, caplog, "was written by another version")


def test_an_oversized_record_is_not_read(tmp_path, caplog, monkeypatch):
    ids = sources(tmp_path / "src")
    entry = stored(tmp_path / "home", ids)
    size = entry.record.stat().st_size
    monkeypatch.setattr(entries, "MAX_RECORD_BYTES", size - 1)
    rejected(entry, ids, caplog, f"has a {size}-byte record (at most {size - 1})")


@pytest.mark.parametrize("which", ["record", "payload"])
@pytest.mark.parametrize("kind", ["fifo", "link", "folder"])
def test_entry_files_that_are_not_regular_files_are_not_opened(tmp_path, caplog, which, kind):
    ids = sources(tmp_path / "src")
    entry = stored(tmp_path / "home", ids)
    path = entry.record if which == "record" else entry.payload
    real = tmp_path / "real"
    real.write_bytes(path.read_bytes())
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block until a writer comes
    elif kind == "link":
        path.symlink_to(real)
    else:
        path.mkdir()
    start = time.monotonic()
    words = "symbolic link" if kind == "link" else "non-regular file"
    rejected(entry, ids, caplog, words)
    assert time.monotonic() - start < 5


def test_entries_need_the_key_that_signed_them(tmp_path, caplog):
    ids = sources(tmp_path / "src")
    entry = stored(tmp_path / "home", ids)
    (entry.home / KEY_FILE).unlink()
    rejected(entry, ids, caplog, "the cache key is gone")
    cache_key(entry.home, create=True)  # a new key: the old signatures are worthless
    rejected(entry, ids, caplog, "is not signed by this cache's key")


def test_a_lost_record_or_payload_is_one_warning(tmp_path, caplog):
    ids = sources(tmp_path / "src")
    entry = stored(tmp_path / "home", ids)
    entry.payload.unlink()
    rejected(entry, ids, caplog, "has lost its payload")
    entry = stored(tmp_path / "home", ids)
    entry.record.unlink()
    rejected(entry, ids, caplog, "has a payload but no record")


def test_an_unwritable_cache_is_one_warning(tmp_path, caplog):
    ids = sources(tmp_path / "src")
    (tmp_path / "home").write_text("")  # a file where the home should be
    entry = make_entry(tmp_path / "home", ("dnn",), "net", ids, kind="test", suffix=".bin")
    with caplog.at_level("WARNING", logger="caffe_compat.cache"):
        assert not store_or_warn(entry, ids, lambda out: out.write(b"x"))
        assert load_entry(entry, ids) is None
    assert len(caplog.records) == 1 and "could not write the cache entry" in caplog.text


def test_prune_removes_stale_entries_and_the_former_layout_only(tmp_path):
    ids, old = sources(tmp_path / "a"), sources(tmp_path / "b", b"two")
    home = tmp_path / "home"
    stale, entry = stored(home, old), stored(home, ids)
    folder = entry.folder
    former = [folder / ("net." + "a" * 40 + ".npz"), folder / ("net." + "a" * 40 + ".npz.sha256")]
    kept = [folder / "net.notes.txt", folder / "other.0123.bin", folder / ("net." + "b" * 32)]
    for path in former + kept:
        path.write_text("x")
    removed = prune(entry, re.compile(r"[0-9a-f]{40}\.npz(\.sha256)?"))
    assert sorted(removed) == sorted([stale.payload, stale.record, *former])
    assert sorted(folder.iterdir()) == sorted([entry.payload, entry.record, *kept])


HUGE = r"""
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, resource.RLIM_INFINITY))
from caffe_compat.cache.entries import Entry, _sign, load_entry
from caffe_compat.cache.home import cache_key
from caffe_compat.io.identity import Identity

home, stem, sign = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "sign"
size, sha = int(sys.argv[4]), sys.argv[5]
entry = Entry(home, ("dnn",), stem, ".bin", "test")
ids = {k: Identity(**v, git_blob="") for k, v in json.loads(sys.argv[6]).items()}
with open(entry.payload, "r+b") as handle:
    handle.truncate(3 << 30)  # a sparse 3 GiB payload
record = json.loads(entry.record.read_text())
record["body"]["payload"]["size"] = 3 << 30
if sign:  # as only a holder of the key could: the read is tried, and fails inside the limit
    record["mac"] = _sign(cache_key(home, create=False), record["body"])
entry.record.write_text(json.dumps(record))
print(load_entry(entry, ids))
"""


@pytest.mark.parametrize("sign", ["sign", "forge"])
def test_a_3_gib_payload_is_never_read_into_memory_by_a_forged_record(tmp_path, sign):
    """Issue 21: a 3 GiB .onnx was a MemoryError; now its record must vouch for it before a
    byte is read, and even a validly signed one that cannot fit is one warning (run under a
    1.5 GiB address-space limit)."""
    ids = sources(tmp_path / "src")
    entry = stored(tmp_path / "home", ids)
    as_json = {k: {"size": v.size, "sha256": v.sha256} for k, v in ids.items()}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            HUGE,
            str(entry.home),
            entry.stem,
            sign,
            "0",
            "x",
            json.dumps(as_json),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,  # not the checkout: the installed package must be the one imported
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "None"
    words = "MemoryError" if sign == "sign" else "is not signed by this cache's key"
    assert words in done.stderr and done.stderr.count("rebuilding it") == 1
