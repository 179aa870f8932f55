"""The output folder of a large run: shards appear whole, completed paths come from the shards,
duplicates from a retried call are removed (keeping the first shard's copy), settings guard
against mixing runs, and one driver at a time."""

from __future__ import annotations

import os

import pytest

from caffe_compat.app import scale_output as out
from caffe_compat.errors import CaffeCompatError

pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (the ray extra)")
pq = pytest.importorskip("pyarrow.parquet")


def _rows(photos: dict[str, int], tag: str = "a") -> pa.Table:
    """Rows for photos with the given face counts (0: one face-0 row)."""
    columns: dict[str, list] = {name: [] for name in out.schema().names}
    for path, count in photos.items():
        for face in range(1, count + 1) if count else [0]:
            row = dict.fromkeys(columns)
            row.update(path=path, face=face, faces=count, age=tag)
            for name, value in row.items():
                columns[name].append(value)
    return pa.Table.from_pydict(columns, schema=out.schema())


def test_commit_is_whole_and_respects_the_umask(tmp_path):
    saved = os.umask(0o027)
    try:
        name = out.commit_shard(tmp_path, _rows({"/p/a.jpg": 2, "/p/b.jpg": 0}))
    finally:
        os.umask(saved)
    path = tmp_path / name
    assert (path.stat().st_mode & 0o777) == 0o640
    assert out.shard_files(tmp_path) == [path]
    assert not list(tmp_path.glob(".part-*"))  # nothing left beside it
    assert out.completed_paths(tmp_path) == {"/p/a.jpg", "/p/b.jpg"}
    assert pq.read_table(path).num_rows == 3


def test_partial_files_are_ignored_then_removed(tmp_path):
    out.commit_shard(tmp_path, _rows({"/p/a.jpg": 1}))
    torn = tmp_path / ".part-0123.tmp"
    torn.write_bytes(b"PAR1 half a shard")
    assert out.completed_paths(tmp_path) == {"/p/a.jpg"}
    assert out.read_results(tmp_path).num_rows == 1
    assert out.remove_partial(tmp_path) == 1 and not torn.exists()


def test_duplicates_keep_the_first_shard_and_the_pass_is_idempotent(tmp_path):
    first = out.commit_shard(tmp_path, _rows({"/p/a.jpg": 2, "/p/b.jpg": 1}, "first"))
    second = out.commit_shard(tmp_path, _rows({"/p/b.jpg": 1, "/p/c.jpg": 0}, "second"))
    third = out.commit_shard(tmp_path, _rows({"/p/a.jpg": 2}, "third"))
    names = sorted([first, second, third])
    # read_results de-duplicates on the fly, by the first shard (by name) holding each photo
    table = out.read_results(tmp_path)
    assert table.column("path").to_pylist() == ["/p/a.jpg", "/p/a.jpg", "/p/b.jpg", "/p/c.jpg"]
    assert table.column("face").to_pylist() == [1, 2, 1, 0]
    owner = {}
    for name in names:
        for path in pq.read_table(tmp_path / name).column("path").to_pylist():
            owner.setdefault(path, name)
    tags = {"first": first, "second": second, "third": third}
    for path, tag in zip(table.column("path").to_pylist(), table.column("age").to_pylist()):
        assert tags[tag] == owner[path]
    before = {
        (p, f) for p, f in zip(table.column("path").to_pylist(), table.column("face").to_pylist())
    }
    removed = out.deduplicate(tmp_path)
    assert removed == 3  # a's two rows and b's one row, from the later shards
    assert out.deduplicate(tmp_path) == 0
    every = pa.concat_tables(pq.read_table(p) for p in out.shard_files(tmp_path))
    keys = list(zip(every.column("path").to_pylist(), every.column("face").to_pylist()))
    assert len(keys) == len(set(keys)) and set(keys) == before
    assert out.read_results(tmp_path).equals(table)


def test_read_results_of_an_empty_folder(tmp_path):
    table = out.read_results(tmp_path, columns=["path", "face", "error"])
    assert table.num_rows == 0 and table.column_names == ["path", "face", "error"]


def test_settings_are_recorded_then_enforced(tmp_path):
    settings = {"crop": "oversample", "models": {"age": "age.onnx sha256=00"}}
    out.check_settings(tmp_path, settings)
    out.check_settings(tmp_path, dict(settings))  # the same: resume
    with pytest.raises(CaffeCompatError, match=r"other settings \(crop\); use another output"):
        out.check_settings(tmp_path, {**settings, "crop": "center"})


def test_one_driver_per_folder(tmp_path):
    busy = pytest.raises(CaffeCompatError, match="another run is writing to this folder")
    with out.run_lock(tmp_path), busy, out.run_lock(tmp_path):
        pass
    with out.run_lock(tmp_path):  # released
        pass


# --------------------------------------------------------------------------------------------
# Files that are not shards of this engine; names that are not UTF-8


def test_a_foreign_or_damaged_shard_is_refused_in_one_line_naming_it(tmp_path):
    out.commit_shard(tmp_path, _rows({"/p/a.jpg": 1}))
    foreign = tmp_path / "part-x.parquet"
    pq.write_table(pa.table({"path": ["/p/b.jpg"]}), foreign)
    for call in (out.completed_paths, out.read_results, out.deduplicate):
        with pytest.raises(CaffeCompatError) as caught:
            call(tmp_path)
        message = str(caught.value)
        assert caught.value.path == str(foreign) and "\n" not in message
        assert "not a shard of this engine" in message and "face" in message
    foreign.write_bytes(b"PAR1 torn")
    with pytest.raises(CaffeCompatError, match="unreadable shard") as caught:
        out.completed_paths(tmp_path)
    assert caught.value.path == str(foreign) and "\n" not in str(caught.value)
    typed = _rows({"/p/c.jpg": 1}).set_column(1, "face", pa.array(["1"], pa.string()))
    pq.write_table(typed, foreign)
    with pytest.raises(CaffeCompatError, match=r"column types face \(string, not int32\)"):
        out.completed_paths(tmp_path)


def test_shards_of_the_first_format_still_count(tmp_path):
    """Shards written before the path_bytes column: read, resumed, rewritten with it."""
    old = _rows({"/p/a.jpg": 1, "/p/b.jpg": 0}).drop_columns(["path_bytes"])
    pq.write_table(old, tmp_path / "part-0.parquet")
    pq.write_table(old.slice(1), tmp_path / "part-1.parquet")  # b.jpg committed twice
    assert out.completed_paths(tmp_path) == {"/p/a.jpg", "/p/b.jpg"}
    table = out.read_results(tmp_path)
    assert table.column("path_bytes").to_pylist() == [None, None]
    assert out.deduplicate(tmp_path) == 1


def test_names_that_are_not_utf8_keep_their_bytes(tmp_path):
    raw = b"/p/caf\xe9.jpg"
    listed = os.fsdecode(raw)  # what walking a folder gives for that name
    rows = _rows({"/p/caf\\xe9.jpg": 1, "/p/plain.jpg": 1})
    rows = rows.set_column(
        rows.schema.get_field_index("path_bytes"),
        "path_bytes",
        pa.array([raw, None], pa.binary()),
    )
    out.commit_shard(tmp_path, rows)
    out.commit_shard(tmp_path, _rows({"/p/caf\\xe9.jpg": 1}))  # a real name with a backslash
    done = out.completed_paths(tmp_path)
    assert done == {listed, "/p/plain.jpg", "/p/caf\\xe9.jpg"}  # three photos, none confused
    assert out.deduplicate(tmp_path) == 0
    table = out.read_results(tmp_path)
    pairs = zip(table.column("path").to_pylist(), table.column("path_bytes").to_pylist())
    assert sorted(pairs, key=repr) == [
        ("/p/caf\\xe9.jpg", None),
        ("/p/caf\\xe9.jpg", raw),
        ("/p/plain.jpg", None),
    ]
