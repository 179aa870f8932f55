"""What a large run reads: every file under a folder, or the paths a manifest lists.

A SOURCE is a folder (searched recursively, sorted, dot-names left out and folder symlinks not
followed, as ``caffe-compat predict`` walks folders), a text manifest (one path per line) or a
Parquet manifest (a ``path`` column). Paths come back absolute (a manifest's relative paths count
from the manifest's own folder), because the processes that read them may run elsewhere (other
working directories, other machines sharing the file system); each path appears once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import CaffeCompatError

PARQUET_MAGIC = b"PAR1"


def walk_folder(folder: str) -> Iterator[str]:
    """Absolute paths of the files under ``folder``, sorted, dot-names left out. Whatever is not
    a folder is listed (FIFOs, broken links, link loops): the readers report those per file."""
    root_dir = os.path.abspath(folder)
    for root, dirs, files in os.walk(root_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(root, name)


def _text_manifest(path: Path) -> Iterator[str]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if b"\0" in raw:
                raise CaffeCompatError(
                    "not a text manifest (NUL byte)", path=str(path), line=number
                )
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise CaffeCompatError(
                    "manifest line is not UTF-8 text", path=str(path), line=number
                ) from None
            if line:
                yield line


def _parquet_manifest(path: Path) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise CaffeCompatError(f"unreadable Parquet manifest: {exc}", path=str(path)) from None
    names = parquet.schema_arrow.names
    if "path" not in names:
        raise CaffeCompatError(
            f"a Parquet manifest needs a 'path' column; it has {', '.join(names) or 'none'}",
            path=str(path),
        )
    kind = parquet.schema_arrow.field("path").type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise CaffeCompatError(f"the 'path' column holds {kind}, not strings", path=str(path))
    for batch in parquet.iter_batches(columns=["path"], batch_size=65536):
        for value in batch.column(0).to_pylist():
            if value:
                yield value


def _absolute(paths: Iterable[str], base: str) -> Iterator[str]:
    for path in paths:
        yield os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))


def _unique(paths: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(paths))


def list_source(source: str | os.PathLike[str]) -> list[str]:
    """The photos of a SOURCE (folder, text manifest or Parquet manifest), absolute, unique,
    in listing order."""
    path = Path(source)
    if path.is_dir():
        return list(walk_folder(str(path)))
    if not path.is_file():
        raise CaffeCompatError("no such folder or manifest", path=str(source))
    with path.open("rb") as handle:
        head = handle.read(len(PARQUET_MAGIC))
    base = os.path.dirname(os.path.abspath(path))
    reader = _parquet_manifest if head == PARQUET_MAGIC else _text_manifest
    return _unique(_absolute(reader(path), base))
