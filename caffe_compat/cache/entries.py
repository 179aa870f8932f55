"""Signed cache entries: a payload file and the JSON record that vouches for it.

``<stem><suffix>`` holds the payload (ONNX bytes, raw arrays); ``<stem>.json`` holds
``{"body": ..., "mac": ...}`` where the body names the entry's kind, the caffe-compat version,
the identities (size + SHA-256) of the source files, the payload's size and SHA-256 and what the
consumer needs to decode it (``meta``), and ``mac`` is an HMAC-SHA256 of the body under the
home's key. The stem is a readable name plus a hash of kind, version and sources, so a lookup
finds the entry of exactly these sources; the record is still compared on every load, since a
file name proves nothing.

Loading checks, in order, before anything is decoded or allocated by a number from the entry:
both files are regular files (no link, FIFO or device is opened), the record is at most
``MAX_RECORD_BYTES``, its signature, kind, version and sources match, and the payload's size
and then SHA-256 match the record. Any failure, an exception while reading included, is one
warning and ``None``: the caller rebuilds the entry. Both files are written as a set
(``io.atomic``), payload hashed while it is written.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import hmac
import io
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .. import __version__
from ..io.atomic import atomic_outputs, remove_stale_partials
from ..io.identity import Identity
from ..printable import printable
from .home import UnsafeCacheError, cache_key, checked_folder

FORMAT = 2
RECORD = ".json"
MAX_RECORD_BYTES = 64 << 20  # names and manifests of 50,000-layer nets fit many times over
_CHUNK = 1 << 20
_DOMAIN = b"caffe-compat cache entry\0"
_KEY = re.compile(r"[0-9a-f]{32}")
# What reading a damaged or hostile entry can raise; each means "rebuild it".
DAMAGE = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    MemoryError,
    EOFError,
)
log = logging.getLogger(__package__)

Writer = Callable[[BinaryIO], None]


@dataclass(frozen=True)
class Entry:
    """Where one entry lives: ``home / parts`` (checked folders), ``stem`` + ``suffix``."""

    home: Path
    parts: tuple[str, ...]
    stem: str
    suffix: str  # the payload's, e.g. ".onnx"
    kind: str  # what the payload is; a record of another kind is never served

    @property
    def folder(self) -> Path:
        return self.home.joinpath(*self.parts)

    @property
    def payload(self) -> Path:
        return self.folder / f"{self.stem}{self.suffix}"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.stem}{RECORD}"


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sources_json(sources: Mapping[str, Identity]) -> dict[str, dict[str, Any]]:
    """The identities an entry records for its sources: size and SHA-256 of each."""
    return {role: {"size": i.size, "sha256": i.sha256} for role, i in sources.items()}


def readable_name(text: str) -> str:
    """``text`` as a plain file-name part (no separators, not hidden), at most 60 characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:60].lstrip(".") or "entry"


def entry_stem(readable: str, sources: Mapping[str, Identity], kind: str) -> str:
    """``<readable>.<32 hex>``: the hash covers format, kind, caffe-compat's version and the
    sources' identities, so other sources or another version look up another entry."""
    key = {"format": FORMAT, "kind": kind, "caffe_compat": __version__}
    key["sources"] = sources_json(sources)  # type: ignore[assignment]
    return f"{readable_name(readable)}.{hashlib.sha256(_canonical(key)).hexdigest()[:32]}"


def make_entry(
    home: Path,
    parts: tuple[str, ...],
    readable: str,
    sources: Mapping[str, Identity],
    *,
    kind: str,
    suffix: str,
) -> Entry:
    return Entry(home, parts, entry_stem(readable, sources, kind), suffix, kind)


def _sign(key: bytes, body: Any) -> str:
    return hmac.new(key, _DOMAIN + _canonical(body), hashlib.sha256).hexdigest()


def reject(entry: Entry, why: str) -> None:
    """The one warning for an entry that is not served."""
    log.warning("cache entry %s %s; rebuilding it", printable(str(entry.record)), why)


def _open_regular(path: Path) -> tuple[BinaryIO, int] | str | None:
    """``path`` opened for reading and its size; None when absent; why not, when it is a
    link, FIFO, device or folder (opened without following links or blocking)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"has a symbolic link as its {path.suffix or 'payload'} file"
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return f"has a non-regular file as its {path.suffix or 'payload'} file"
    return os.fdopen(fd, "rb"), info.st_size


def _read_record(entry: Entry) -> dict[str, Any] | str | None:
    opened = _open_regular(entry.record)
    if opened is None:
        return "has a payload but no record" if os.path.lexists(entry.payload) else None
    if isinstance(opened, str):
        return opened
    handle, size = opened
    with handle:
        if size > MAX_RECORD_BYTES:
            return f"has a {size}-byte record (at most {MAX_RECORD_BYTES})"
        data = handle.read(MAX_RECORD_BYTES + 1)
    record = json.loads(data)
    if (
        not isinstance(record, dict)
        or set(record) != {"body", "mac"}
        or not isinstance(record["body"], dict)
        or not isinstance(record["mac"], str)
    ):
        return "has a record that is not a cache record"
    return record


def _read_payload(entry: Entry, size: int, digest: str) -> bytearray | str:
    opened = _open_regular(entry.payload)
    if opened is None:
        return "has lost its payload"
    if isinstance(opened, str):
        return opened
    handle, actual = opened
    with handle:
        if actual != size:
            return f"has a {actual}-byte payload; its record says {size}"
        buffer = bytearray(size)  # the size is the signed record's and the file's own
        view = memoryview(buffer)
        sha = hashlib.sha256()
        done = 0
        while done < size:
            count = handle.readinto(view[done : done + _CHUNK])
            if not count:
                return "has a payload that shrank while read"
            sha.update(view[done : done + count])
            done += count
    if sha.hexdigest() != digest:
        return "has a payload whose content changed since it was written"
    return buffer


def _check_body(entry: Entry, body: dict[str, Any], sources: Mapping[str, Identity]) -> str:
    """Why a signed body does not describe this entry's sources, or ''."""
    if body.get("format") != FORMAT or body.get("caffe_compat") != __version__:
        return "was written by another version"
    if body.get("kind") != entry.kind:
        return f"holds a {printable(str(body.get('kind')))} entry, not {entry.kind}"
    if body.get("sources") != sources_json(sources):
        return f"was made from other files than these {' and '.join(sorted(sources))} files"
    payload = body.get("payload")
    if (
        not isinstance(payload, dict)
        or type(payload.get("size")) is not int
        or payload["size"] < 0
        or not isinstance(payload.get("sha256"), str)
    ):
        return "has a record without its payload's identity"
    return ""


def signed_body(entry: Entry) -> dict[str, Any] | None:
    """The record's body when its signature is this cache's; None otherwise (no warning: for
    listings). Raises what reading can raise (``DAMAGE``, ``UnsafeCacheError``)."""
    checked_folder(entry.home, *entry.parts)
    record = _read_record(entry)
    key = cache_key(entry.home, create=False)
    if not isinstance(record, dict) or key is None:
        return None
    body = record["body"]
    return body if hmac.compare_digest(record["mac"], _sign(key, body)) else None


def _load(entry: Entry, sources: Mapping[str, Identity]) -> tuple[bytearray, Any] | str | None:
    record = _read_record(entry)
    if record is None or isinstance(record, str):
        return record
    key = cache_key(entry.home, create=False)
    if key is None:
        return "cannot be checked: the cache key is gone"
    body = record["body"]
    if not hmac.compare_digest(record["mac"], _sign(key, body)):
        return "is not signed by this cache's key (edited, or copied from another cache)"
    why = _check_body(entry, body, sources)
    if why:
        return why
    found = _read_payload(entry, body["payload"]["size"], body["payload"]["sha256"])
    return found if isinstance(found, str) else (found, body.get("meta"))


def load_entry(entry: Entry, sources: Mapping[str, Identity]) -> tuple[bytearray, Any] | None:
    """The verified payload and its ``meta``; None when absent (silently) or not to be served
    (one warning). ``UnsafeCacheError`` for a folder or key others could change."""
    try:
        checked_folder(entry.home, *entry.parts)
        found = _load(entry, sources)
    except UnsafeCacheError:
        raise
    except DAMAGE as exc:
        reject(entry, f"cannot be read ({type(exc).__name__}: {printable(str(exc))[:200]})")
        return None
    if isinstance(found, str):
        reject(entry, found)
        return None
    return found


class _HashingWriter:
    """A write-only stream that hashes and counts what passes through."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def read(self, *_: Any) -> bytes:  # numpy and zipfile probe for it to tell a stream
        raise io.UnsupportedOperation("write-only")


def store_entry(
    entry: Entry, sources: Mapping[str, Identity], write: Writer, meta: Any = None
) -> int:
    """Write the payload (``write`` streams it) and its signed record as a set; return the
    payload's size. ``OSError`` when the cache cannot be written; ``UnsafeCacheError`` for a
    folder or key others could change."""
    checked_folder(entry.home, *entry.parts, create=True)
    key = cache_key(entry.home, create=True)
    assert key is not None
    for path in (entry.payload, entry.record):  # left by a process killed while caching
        remove_stale_partials(path)
    with atomic_outputs([entry.payload, entry.record]) as (tmp_payload, tmp_record):
        with open(tmp_payload, "wb") as handle:
            writer = _HashingWriter(handle)
            write(writer)  # type: ignore[arg-type]
        body = {
            "format": FORMAT,
            "kind": entry.kind,
            "caffe_compat": __version__,
            "sources": sources_json(sources),
            "payload": {"size": writer.size, "sha256": writer.sha256.hexdigest()},
            "meta": meta,
        }
        record = {"body": body, "mac": _sign(key, body)}
        tmp_record.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", "utf-8")
    return writer.size


def store_or_warn(
    entry: Entry, sources: Mapping[str, Identity], write: Writer, meta: Any = None
) -> bool:
    """``store_entry``, a cache that cannot be written being one warning (the work goes on
    uncached); whether it was written."""
    try:
        store_entry(entry, sources, write, meta)
    except OSError as exc:
        log.warning("could not write the cache entry %s (%s)", printable(str(entry.payload)), exc)
        return False
    return True


def prune(entry: Entry, legacy: re.Pattern[str] | None = None) -> list[Path]:
    """Remove the folder's other entries of the same readable name (made from files that are no
    longer there), and files of a former layout whose name after ``<readable>.`` matches
    ``legacy``; return what was removed. Links and folders are left alone."""
    readable = entry.stem.rsplit(".", 1)[0]
    removed = []
    for old in entry.folder.glob(f"{glob.escape(readable)}.*"):
        rest = old.name[len(readable) + 1 :]
        key, _, tail = rest.partition(".")
        ours = old in (entry.payload, entry.record)
        other = bool(_KEY.fullmatch(key)) and f".{tail}" in (entry.suffix, RECORD)
        former = legacy is not None and legacy.fullmatch(rest) is not None
        if not ours and (other or former) and old.is_file() and not old.is_symlink():
            old.unlink(missing_ok=True)
            removed.append(old)
    return removed
