"""The output folder of a large run: Parquet shards committed whole, and what they say is done.

Layout of DIR::

    part-<32 hex>.parquet   one shard per inference call: every row of every photo in that call
    _run.json               the settings and model identities every shard was computed with
    .lock                   held by the driver of the run writing here
    .part-*.tmp             a shard being written (left over only by a killed run; removed)

Invariants that make a killed run restartable with nothing lost and nothing doubled:

1. A shard becomes visible only by ``os.replace`` of a complete, fsynced file, so a reader sees
   all of a shard or none of it.
2. A shard holds ALL rows of each photo it names (the faces of one photo never split across
   calls), so "the path occurs in a committed shard" is exactly "the photo is done". The
   manifest of completed paths is therefore the union of the shards' ``path`` columns: nothing
   to keep in step with the shards, nothing to lose between a commit and a manifest update.
3. A restart lists the source again and processes only paths not yet done.
4. The one way a photo can be committed twice is a retried call (a worker that died after its
   commit, or a killed run's worker finishing while the next run starts). ``deduplicate`` keeps
   each photo in the first shard (by name) holding it and rewrites the others (each rewrite
   atomic; the choice is deterministic, so an interrupted pass converges when run again).
   ``read_results`` applies the same rule on the fly.

Parquet readers (pandas, DuckDB, pyarrow.dataset) skip names starting with ``.`` or ``_``, so
``pandas.read_parquet(DIR)`` reads exactly the committed shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import CaffeCompatError

SHARD_PREFIX, SHARD_SUFFIX = "part-", ".parquet"
TMP_PREFIX, TMP_SUFFIX = ".part-", ".tmp"
SETTINGS_FILE = "_run.json"
LOCK_FILE = ".lock"
FORMAT = 1


def schema() -> Any:
    """Columns of every shard (see ``caffe_compat.app.scale``)."""
    import pyarrow as pa

    box = pa.list_(pa.int32())
    probs = pa.list_(pa.float32())
    return pa.schema(
        [
            ("path", pa.string()),
            ("face", pa.int32()),
            ("faces", pa.int32()),
            ("box", box),
            ("crop_box", box),
            ("detection_score", pa.float64()),
            ("age", pa.string()),
            ("age_prob", pa.float32()),
            ("age_probs", probs),
            ("gender", pa.string()),
            ("gender_prob", pa.float32()),
            ("gender_probs", probs),
            ("crop", pa.string()),
            ("backend", pa.string()),
            ("age_model", pa.string()),
            ("gender_model", pa.string()),
            ("error", pa.string()),
            # the exact name where it is not UTF-8 (``path`` then shows it with \\xNN escapes)
            ("path_bytes", pa.binary()),
        ]
    )


# Columns a shard may lack: added after the first format (null there).
OPTIONAL_COLUMNS = ("path_bytes",)


def shard_files(out_dir: str | os.PathLike[str]) -> list[Path]:
    """The committed shards, sorted by name."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.name.startswith(SHARD_PREFIX) and p.name.endswith(SHARD_SUFFIX)
    )


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(table: Any, target: Path) -> None:
    """Write ``table`` beside ``target`` (mode 0666 less the umask), fsync, rename into place."""
    import pyarrow.parquet as pq

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(target.parent)


def commit_shard(out_dir: str | os.PathLike[str], table: Any) -> str:
    """Make ``table`` (whole photos only) a committed shard; return its file name."""
    name = f"{SHARD_PREFIX}{uuid.uuid4().hex}{SHARD_SUFFIX}"
    _write_atomic(table, Path(out_dir) / name)
    return name


def remove_partial(out_dir: str | os.PathLike[str]) -> int:
    """Delete shards a killed run left half-written; call only while holding the lock."""
    removed = 0
    for path in Path(out_dir).glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def _check_shard(path: Path) -> list[str]:
    """The column names of a shard of this engine, or one line naming a file that is not one
    (another program's Parquet file, or a damaged shard)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        found = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise CaffeCompatError(f"unreadable shard: {exc}", path=str(path)) from None
    expected = schema()
    missing = [
        f.name for f in expected if f.name not in found.names and f.name not in OPTIONAL_COLUMNS
    ]
    wrong = [
        f"{f.name} ({found.field(f.name).type}, not {f.type})"
        for f in expected
        if f.name in found.names and not found.field(f.name).type.equals(f.type)
    ]
    if missing or wrong:
        what = (
            f"no {', '.join(missing)} column(s)" if missing else "column types " + ", ".join(wrong)
        )
        raise CaffeCompatError(
            f"not a shard of this engine ({what}): another program's file or a damaged one; "
            "move it out of the output folder",
            path=str(path),
        )
    return list(found.names)


def read_shard(path: Path, columns: list[str]) -> Any:
    """``columns`` of a checked shard; an optional column it lacks comes back as nulls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    present = _check_shard(path)
    try:
        table = pq.read_table(path, columns=[c for c in columns if c in present])
    except (pa.ArrowException, OSError) as exc:
        raise CaffeCompatError(f"unreadable shard: {exc}", path=str(path)) from None
    for name in columns:
        if name not in present:
            kind = schema().field(name).type
            table = table.append_column(name, pa.nulls(len(table), kind))
    return table.select(columns)


def row_keys(table: Any) -> list[str]:
    """Which photo each row is about, exactly (``path_bytes`` where the name is not UTF-8, as
    ``os.fsdecode`` gives it; else ``path``): what a listing of the source holds."""
    paths = table.column("path").to_pylist()
    if "path_bytes" not in table.column_names:
        return paths
    raw = table.column("path_bytes").to_pylist()
    return [p if b is None else os.fsdecode(b) for p, b in zip(paths, raw)]


def completed_paths(out_dir: str | os.PathLike[str]) -> set[str]:
    """Every photo some committed shard holds (invariant 2: exactly the finished ones)."""
    done: set[str] = set()
    for shard in shard_files(out_dir):
        done.update(row_keys(read_shard(shard, ["path", "path_bytes"])))
    return done


def _owned_rows(shards: list[Path], columns: list[str]) -> Iterator[tuple[Path, Any, Any]]:
    """(shard, table, mask of rows to keep): a photo stays in the first shard holding it."""
    import pyarrow as pa

    seen: set[str] = set()
    wanted = list(dict.fromkeys([*columns, "path", "path_bytes"]))
    for shard in shards:
        table = read_shard(shard, wanted)
        keys = row_keys(table)
        keep = pa.array([key not in seen for key in keys], pa.bool_())
        seen.update(keys)
        yield shard, table.select(columns), keep


def deduplicate(out_dir: str | os.PathLike[str]) -> int:
    """Remove photos committed twice (invariant 4); return the number of rows removed."""
    removed = 0
    for shard, table, keep in _owned_rows(shard_files(out_dir), ["path"]):
        dropped = len(table) - keep.true_count
        if not dropped:
            continue
        full = read_shard(shard, schema().names)
        kept = full.filter(keep)
        if len(kept):
            _write_atomic(kept, shard)
        else:
            with contextlib.suppress(FileNotFoundError):
                shard.unlink()
            _fsync_dir(shard.parent)
        removed += dropped
    return removed


def read_results(out_dir: str | os.PathLike[str], columns: list[str] | None = None) -> Any:
    """The results as one pyarrow Table sorted by (path, face), each (photo, face) once even
    while duplicates from a retried call are still on disk."""
    import pyarrow as pa

    columns = list(columns or schema().names)
    wanted = columns if "path" in columns else ["path", *columns]
    parts = [table.filter(keep) for _, table, keep in _owned_rows(shard_files(out_dir), wanted)]
    fields = [schema().field(name) for name in wanted]
    table = pa.concat_tables(parts) if parts else pa.schema(fields).empty_table()
    if "face" in table.column_names:
        table = table.sort_by([("path", "ascending"), ("face", "ascending")])
    else:
        table = table.sort_by([("path", "ascending")])
    return table.select(columns)


# --------------------------------------------------------------------------------------------
# Settings and the lock


def check_settings(out_dir: str | os.PathLike[str], settings: dict[str, Any]) -> None:
    """Record the run's settings, or refuse a folder holding results of other settings (mixing
    them would make the numbers depend on which run computed which photo)."""
    path = Path(out_dir) / SETTINGS_FILE
    wanted = {"format": FORMAT, **settings}
    if path.exists():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CaffeCompatError(f"unreadable run settings: {exc}", path=str(path)) from None
        wanted = json.loads(json.dumps(wanted))
        if recorded != wanted:
            keys = set(recorded) | set(wanted)
            differ = sorted(k for k in keys if recorded.get(k) != wanted.get(k))
            raise CaffeCompatError(
                f"the folder holds results computed with other settings ({', '.join(differ)}); "
                "use another output folder, or the same settings to resume",
                path=str(out_dir),
            )
        return
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(wanted, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike[str]) -> Iterator[None]:
    """One driver per output folder (an advisory lock the kernel drops if the driver dies)."""
    import fcntl

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CaffeCompatError(
                "another run is writing to this folder", path=str(folder)
            ) from None
        yield
    finally:
        os.close(fd)
