"""Solver snapshots (``.solverstate`` and ``.solverstate.h5``) as Caffe writes and reads them.

Binary (``SnapshotSolverStateToBinaryProto``): a ``SolverState`` message with ``iter``,
``learned_net`` (the caffemodel written beside it), one ``history`` BlobProto per history blob in
the solver's order, and ``current_step``. HDF5 (``SnapshotSolverStateToHDF5``): datasets
``iter`` and ``current_step`` (one int each), ``learned_net`` (a NUL-terminated string) and a
group ``history`` holding ``0``, ``1``, ... in the same order.

Caffe picks the reader by the file name (``.h5`` means HDF5); here the content decides, so a
renamed file still loads. A state file is untrusted input: its history blobs are checked
(shape against stored values) before anything is allocated, HDF5 links and external storage are
refused as for HDF5 caffemodels, and damage is one line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import BlobError, CaffeCompatError, FileFormatError
from ..io.atomic import atomic_output
from ..io.blobs import read_blob, scan_blob
from ..io.hdf5 import _check_dataset, _check_links
from ..io.sniff import Kind, explain, sniff
from ..io.source import ByteSource, open_regular
from ..io.wire import LEN, VARINT, WireError, iter_fields, write_key, write_varint
from ..io.writer import _Blob

Format = Literal["binaryproto", "hdf5"]
_ITER, _LEARNED_NET, _HISTORY, _CURRENT_STEP = 1, 2, 3, 4
_MAX_NAME = 1 << 16  # a learned_net path longer than this is damage, not a path


@dataclass
class SolverState:
    """What a snapshot holds: the iteration, the lr policy's step, the weights file it names and
    the history blobs (float32, in the solver's order)."""

    iter: int = 0
    current_step: int = 0
    learned_net: str = ""
    history: list[np.ndarray] = field(default_factory=list)
    path: str = ""
    format: Format = "binaryproto"

    def learned_net_path(self) -> Path | None:
        """The weights file to restore from, as Caffe opens it (relative to the working
        folder); when that does not exist, the same name beside the state file."""
        if not self.learned_net:
            return None
        named = Path(self.learned_net)
        if named.exists() or not self.path:
            return named
        beside = Path(self.path).parent / named.name
        return beside if beside.exists() else named


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def read_solverstate(path: str | os.PathLike[str]) -> SolverState:
    """Read a binary or HDF5 solver state (the content decides which)."""
    fd, _ = open_regular(path)
    try:
        head = os.read(fd, 4096)
    finally:
        os.close(fd)
    kind = sniff(head)
    if kind is Kind.HDF5:
        return _read_hdf5(Path(path))
    problem = explain(kind, head, "solver state")
    if problem is None and kind is Kind.TEXT:
        problem = "this is a text file, not a binary solver state"
    if problem:
        raise FileFormatError(problem, path=str(path))
    return _read_binary(Path(path))


def _read_binary(path: Path) -> SolverState:
    state = SolverState(path=str(path), format="binaryproto")
    with ByteSource.open(path) as src:
        try:
            for f in iter_fields(src.buf, 0, len(src)):
                if f.number in (_ITER, _CURRENT_STEP) and f.wire_type == VARINT:
                    if f.number == _ITER:
                        state.iter = _int32(f.value)
                    else:
                        state.current_step = _int32(f.value)
                elif f.number == _LEARNED_NET and f.wire_type == LEN:
                    if f.end - f.start > _MAX_NAME:
                        raise WireError(f"learned_net of {f.end - f.start} bytes", f.tag_start)
                    state.learned_net = bytes(src.buf[f.start : f.end]).decode("utf-8", "replace")
                elif f.number == _HISTORY and f.wire_type == LEN:
                    index = len(state.history)
                    try:
                        span = scan_blob(src, f.start, f.end)
                        state.history.append(read_blob(src, span, copy=True))
                    except ValueError as exc:
                        if isinstance(exc, WireError):
                            raise
                        raise BlobError(f"history blob {index}: {exc}", path=str(path)) from None
                elif f.number in (_ITER, _LEARNED_NET, _HISTORY, _CURRENT_STEP):
                    raise WireError(f"field {f.number} has wire type {f.wire_type}", f.tag_start)
                # other fields (forks' minimum_loss, iter_last_event) are not Caffe's: skipped
        except WireError as exc:
            raise FileFormatError(
                f"not a readable SolverState: {exc.reason} at byte {exc.offset}", path=str(path)
            ) from None
    if state.iter < 0:
        raise FileFormatError(f"iter is {state.iter}: not a solver state", path=str(path))
    return state


def _read_hdf5(path: Path) -> SolverState:
    import h5py

    where: dict[str, Any] = {"path": str(path)}
    file_size = path.stat().st_size
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise FileFormatError(f"HDF5 file does not open ({exc})", path=str(path)) from None
    try:
        with handle:
            _check_links(handle, str(path))
            return _read_hdf5_open(handle, file_size, where)
    except CaffeCompatError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise FileFormatError(f"corrupt HDF5 solver state ({exc})", path=str(path)) from None


def _scalar_int(handle: Any, name: str, path: str, *, required: bool = True) -> int:
    import h5py

    if name not in handle:
        if required:
            raise FileFormatError(f"no /{name} dataset: not an HDF5 solver state", path=path)
        return 0
    item = handle[name]
    if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "iu" or item.size != 1:
        raise FileFormatError(f"/{name} is not one integer", path=path)
    return _int32(int(np.asarray(item[()]).reshape(-1)[0]))


def _read_hdf5_open(handle: Any, file_size: int, where: dict[str, Any]) -> SolverState:
    import h5py

    path = where["path"]
    state = SolverState(path=path, format="hdf5")
    state.iter = _scalar_int(handle, "iter", path)
    state.current_step = _scalar_int(handle, "current_step", path)
    if "learned_net" in handle:
        item = handle["learned_net"]
        if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "SOU" or item.size != 1:
            raise FileFormatError("/learned_net is not a string", path=path)
        if item.id.get_storage_size() > _MAX_NAME:
            raise FileFormatError("/learned_net is too long to be a file name", path=path)
        value = np.asarray(item[()]).reshape(-1)[0]
        if isinstance(value, bytes):
            value = value.split(b"\0", 1)[0].decode("utf-8", "replace")
        state.learned_net = str(value)
    if "history" not in handle or not isinstance(handle["history"], h5py.Group):
        raise FileFormatError("no /history group: not an HDF5 solver state", path=path)
    group = handle["history"]
    count = len(group)
    for index in range(count):
        key = str(index)
        where["blob"] = key
        if key not in group or not isinstance(group[key], h5py.Dataset):
            raise FileFormatError(
                f"/history holds {count} entries but no dataset {key!r}", path=path
            )
        dataset = group[key]
        _check_dataset(dataset, file_size, where)
        state.history.append(np.asarray(dataset[()], dtype=np.float32))
    where.pop("blob", None)
    return state


# --- writing ----------------------------------------------------------------------------------


def write_solverstate(
    path: str | os.PathLike[str],
    *,
    iter: int,
    current_step: int,
    learned_net: str,
    history: Sequence[np.ndarray],
    format: Format = "binaryproto",
) -> None:
    """Write a state file Caffe restores from (atomically, with the umask's permissions)."""
    if format == "hdf5":
        _write_hdf5(path, iter, current_step, learned_net, history)
    elif format == "binaryproto":
        _write_binary(path, iter, current_step, learned_net, history)
    else:
        raise ValueError(f"format must be binaryproto or hdf5, not {format!r}")


def _varint_int32(value: int) -> bytes:
    return write_varint(value & 0xFFFFFFFFFFFFFFFF)  # negative int32: ten bytes, as protobuf


def _write_binary(path, iter, current_step, learned_net, history) -> None:
    name = learned_net.encode("utf-8")
    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        # Field-number order, as Caffe (C++ protobuf) writes it.
        out.write(write_key(_ITER, VARINT) + _varint_int32(int(iter)))
        out.write(write_key(_LEARNED_NET, LEN) + write_varint(len(name)) + name)
        for array in history:
            piece = _Blob(np.asarray(array, dtype=np.float32), False, "packed")
            out.write(write_key(_HISTORY, LEN) + write_varint(piece.size))
            piece.write(out)
        out.write(write_key(_CURRENT_STEP, VARINT) + _varint_int32(int(current_step)))


def _write_hdf5(path, iter, current_step, learned_net, history) -> None:
    import h5py
    from h5py import h5d, h5s, h5t

    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("iter", data=np.array([iter], dtype=np.int32))
        # H5LTmake_dataset_string: a scalar, NUL-terminated fixed-size string (Caffe's reader
        # copies it into a C string, so the terminator must be stored).
        raw = learned_net.encode("utf-8") + b"\0"
        kind = h5t.C_S1.copy()
        kind.set_size(len(raw))
        kind.set_strpad(h5t.STR_NULLTERM)
        dataset = h5d.create(handle.id, b"learned_net", kind, h5s.create(h5s.SCALAR))
        dataset.write(h5s.ALL, h5s.ALL, np.array(raw, dtype=f"S{len(raw)}"))
        handle.create_dataset("current_step", data=np.array([current_step], dtype=np.int32))
        group = handle.create_group("history")
        for index, array in enumerate(history):
            group.create_dataset(str(index), data=np.asarray(array, dtype=np.float32))
