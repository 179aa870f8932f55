"""SOURCE of a large run: a folder (walked as `caffe-compat predict` walks), a text manifest or a
Parquet manifest; paths absolute, relative ones counted from the manifest's folder, each once."""

from __future__ import annotations

import os

import pytest

from caffe_compat.app.scale_sources import list_source
from caffe_compat.errors import CaffeCompatError


def test_folder_is_walked_sorted_without_dot_names(album):
    listed = list_source(album)
    names = [os.path.relpath(p, album) for p in listed]
    assert names == [
        "astronaut.jpg",
        "bomb.png",
        "broken.jpg",
        "empty.jpg",
        "fifo",
        "loop_a",
        "loop_b",
        "notes.txt",
        "trip/gray.png",
        "trip/pair.png",
        "trip/scan",
    ]
    assert ".hidden.jpg" not in names and all(os.path.isabs(p) for p in listed)


def test_folder_listing_matches_the_cli_walk(album):
    from caffe_compat.cli.predict import collect

    files, _, _ = collect([str(album)])
    assert list_source(album) == [os.path.abspath(f) for f, _ in files]


def test_text_manifest(tmp_path, album):
    manifest = tmp_path / "lists" / "photos.txt"
    manifest.parent.mkdir()
    manifest.write_bytes(
        f"{album / 'astronaut.jpg'}\r\n../album/trip/pair.png\n\n{album / 'astronaut.jpg'}\n"
        "does/not/exist.jpg\n".encode()
    )
    assert list_source(manifest) == [
        str(album / "astronaut.jpg"),
        str(album / "trip" / "pair.png"),  # relative to the manifest's folder, normalised
        str(tmp_path / "lists" / "does" / "not" / "exist.jpg"),  # listed; the reader reports it
    ]


def test_parquet_manifest(tmp_path, album):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    import pyarrow.parquet as pq

    manifest = tmp_path / "photos.parquet"
    pq.write_table(
        pa.table({"id": [1, 2, 3], "path": ["album/astronaut.jpg", None, "album/trip/scan"]}),
        manifest,
    )
    assert list_source(manifest) == [str(album / "astronaut.jpg"), str(album / "trip" / "scan")]
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"file": ["a.jpg"]}), wrong)
    with pytest.raises(CaffeCompatError, match="needs a 'path' column; it has file"):
        list_source(wrong)
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"path": [1, 2]}), numbers)
    with pytest.raises(CaffeCompatError, match="holds int64, not strings"):
        list_source(numbers)


def test_bad_sources(tmp_path):
    with pytest.raises(CaffeCompatError, match="no such folder or manifest"):
        list_source(tmp_path / "nope")
    binary = tmp_path / "photo.jpg"
    binary.write_bytes(b"\xff\xd8\xff\xe0\0\0JFIF\0")
    with pytest.raises(CaffeCompatError, match=r"photo.jpg:1: not a text manifest"):
        list_source(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ok.jpg\ncaf\xe9.jpg\n")
    with pytest.raises(CaffeCompatError, match=r"latin.txt:2: manifest line is not UTF-8"):
        list_source(latin)
