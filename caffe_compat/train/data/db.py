"""The key-value stores Caffe's Data layer reads: LMDB (the ``lmdb`` package) and LevelDB
(``plyvel``), both optional. Records are read in key order, as Caffe's cursor walks them.

An LMDB environment must not cross ``fork``, so every process opens its own (read-only, no lock
file writes); LevelDB allows one process per database, so it is read in the main process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import CaffeCompatError, FileFormatError

MAX_KEYS = 1 << 27  # 134M records: far above any Caffe database; a bound on the key list


def _need(module: str, extra: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CaffeCompatError(
            f"reading {what} needs the {module} package: pip install 'caffe-compat[{extra}]'"
        ) from None


class Database:
    """Read-only access to one database: its keys in order and the value of a key."""

    backend = ""
    in_process = False  # True: read it only in the process that opened it

    def __init__(self, path: str) -> None:
        self.path = path
        self.keys: list[bytes] = []

    def get(self, key: bytes) -> bytes:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None
        return state


class LmdbDatabase(Database):
    backend = "LMDB"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._handle: Any = None
        self._pid: int | None = None
        env = self._env()
        with env.begin(buffers=False) as txn:
            count = int(txn.stat()["entries"])
            if count > MAX_KEYS:
                raise FileFormatError(f"LMDB holds {count:,} records, over {MAX_KEYS:,}", path=path)
            self.keys = list(txn.cursor().iternext(keys=True, values=False))

    def _env(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            lmdb = _need("lmdb", "lmdb", "an LMDB database")
            target = Path(self.path)
            if not target.exists():
                raise FileFormatError("no such LMDB database", path=self.path)
            try:
                self._handle = lmdb.open(
                    self.path,
                    readonly=True,
                    lock=False,
                    readahead=False,
                    subdir=target.is_dir(),
                    max_readers=126,
                )
            except lmdb.Error as exc:
                raise FileFormatError(
                    f"not a readable LMDB database ({exc})", path=self.path
                ) from None
            self._pid = os.getpid()
        return self._handle

    def get(self, key: bytes) -> bytes:
        with self._env().begin(buffers=False) as txn:
            value = txn.get(key)
        if value is None:
            raise FileFormatError(f"record {key!r} vanished while training", path=self.path)
        return value


class LevelDbDatabase(Database):
    backend = "LEVELDB"
    in_process = True

    def __init__(self, path: str) -> None:
        super().__init__(path)
        plyvel = _need("plyvel", "leveldb", "a LevelDB database")
        if not Path(path).is_dir():
            raise FileFormatError("no such LevelDB database (a folder)", path=path)
        try:
            self._handle = plyvel.DB(path, create_if_missing=False)
        except (plyvel.Error, OSError) as exc:
            raise FileFormatError(f"not a readable LevelDB database ({exc})", path=path) from None
        self._pid = os.getpid()
        for count, key in enumerate(self._handle.iterator(include_value=False)):
            if count >= MAX_KEYS:
                raise FileFormatError(f"LevelDB holds over {MAX_KEYS:,} records", path=path)
            self.keys.append(key)

    def get(self, key: bytes) -> bytes:
        if self._handle is None or self._pid != os.getpid():
            raise CaffeCompatError("internal: a LevelDB read outside its process", path=self.path)
        value = self._handle.get(key)
        if value is None:
            raise FileFormatError(f"record {key!r} vanished while training", path=self.path)
        return value


def open_database(path: str, backend: str) -> Database:
    """Open ``path`` by Caffe's ``backend`` name (``LMDB``, or ``LEVELDB``: the default)."""
    if backend == "LMDB":
        return LmdbDatabase(path)
    return LevelDbDatabase(path)
