"""HDF5 caffemodels (Caffe's ``snapshot_format: HDF5``): ``/data/<layer>/<blob index>``.

The layout holds parameter blobs only, no layer definitions, so these weights always need the
prototxt. Dataset sizes are checked against the file before any read. Caffe creates each layer's
group with ``H5Gcreate2(data, name)``, so a layer named ``conv1/relu`` is a subgroup of ``conv1``:
a layer is any group holding datasets, named by its path below ``/data``.

HDF5 can point outside the file: external links, soft links, virtual datasets and external raw
storage make libhdf5 read other files (``/etc/passwd`` as float weights, whose bytes would then
end up in a converted model). A weights file is read only when every link is a hard link and
every dataset's bytes are inside the file (contiguous, chunked or compact layout, no external
storage, only the standard filters, never a plugin); all of it is checked on the file's metadata,
without following anything, before any data is read.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BlobError, FileFormatError
from .atomic import atomic_output
from .sniff import Kind, explain, sniff
from .source import open_regular
from .weights import Weights

# Deflate cannot expand data more than ~1032:1; no honest filter gets near that on float weights.
_MAX_RATIO = 1032
# Filters built into libhdf5 and h5py (deflate, shuffle, fletcher32, szip, nbit, scaleoffset,
# lzf); any other id makes libhdf5 search its plugin folders for a library to load.
_KNOWN_FILTERS = {1, 2, 3, 4, 5, 6, 32000}
_LINK_KINDS = {1: "a soft link", 64: "an external link"}


def _text(name: bytes | str) -> str:
    return name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name


def _check_links(handle: Any, path: str) -> None:
    """Refuse any link but a hard one, without following it (libhdf5's own link walk)."""
    from h5py import h5l

    found: list[tuple[bytes, int]] = []

    def visit(name: bytes, info: Any) -> int | None:
        if info.type != h5l.TYPE_HARD:
            found.append((name, info.type))
            return 1  # stop the walk
        return None

    handle.id.links.visit(visit, info=True)
    if not found:
        return
    name, kind = found[0]
    target = ""
    with contextlib.suppress(Exception):  # only for the message
        value = handle.id.links.get_val(name)
        target = ":".join(map(_text, value)) if isinstance(value, tuple) else _text(value)
    what = _LINK_KINDS.get(kind, f"a user-defined link (type {kind})")
    raise FileFormatError(
        f'"/{_text(name)}" is {what}'
        + (f" to {target}" if target else "")
        + ": a weights file must hold its data itself; links are refused",
        path=path,
    )


def _check_storage(dataset: Any, where: dict) -> None:
    """Refuse a dataset whose bytes are not inside this file, or that needs a filter plugin."""
    from h5py import h5d

    plist = dataset.id.get_create_plist()
    if plist.get_layout() == h5d.VIRTUAL:
        raise BlobError(
            f"dataset {dataset.name} is virtual (data mapped from other files): refused", **where
        )
    if plist.get_external_count():
        names = ", ".join(
            _text(plist.get_external(i)[0]) for i in range(plist.get_external_count())
        )
        raise BlobError(
            f"dataset {dataset.name} keeps its data in external file(s) {names}: refused", **where
        )
    if plist.get_layout() not in (h5d.CONTIGUOUS, h5d.CHUNKED, h5d.COMPACT):
        raise BlobError(
            f"dataset {dataset.name} has unknown storage layout {plist.get_layout()}: refused",
            **where,
        )
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in _KNOWN_FILTERS:
            raise BlobError(
                f"dataset {dataset.name} uses filter {code}, which needs a plugin library: refused",
                **where,
            )


def _layers(group: Any, prefix: str = "") -> dict[str, Any]:
    """Groups that hold datasets, by path below ``group`` (layer names may contain '/')."""
    import h5py

    found: dict[str, Any] = {}
    for key, item in group.items():
        if not isinstance(item, h5py.Group):
            continue
        name = f"{prefix}{key}"
        if any(isinstance(member, h5py.Dataset) for member in item.values()):
            found[name] = item
        found.update(_layers(item, f"{name}/"))
    return found


def _open_error(path: Path, exc: OSError) -> FileFormatError:
    text = str(exc)
    cut = re.search(r"eof = (\d+).*stored_eof = (\d+)", text)
    if cut:
        have, want = int(cut.group(1)), int(cut.group(2))
        return FileFormatError(
            f"truncated HDF5 file: {have:,} bytes, its header says {want:,} (incomplete download?)",
            path=str(path),
        )
    size = path.stat().st_size
    return FileFormatError(
        f"HDF5 file does not open ({text}): truncated or corrupt (the file is {size:,} bytes)",
        path=str(path),
    )


def _check_dataset(dataset: Any, file_size: int, where: dict, *, kinds: str = "f") -> None:
    """Refuse a dataset whose declared size the file cannot hold, before reading it.
    ``kinds``: the numpy kinds accepted (floats; HDF5Data also takes integers, as Caffe)."""
    _check_storage(dataset, where)
    if dataset.dtype.kind not in kinds:
        what = "floats" if kinds == "f" else "numbers"
        raise BlobError(f"holds {dataset.dtype} values, not {what}", **where)
    count = 1
    for d in dataset.shape:
        count *= int(d)
    nbytes = count * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if dataset.compression is None:
        offset = dataset.id.get_offset()  # None unless contiguous
        end = (offset or 0) + nbytes
        if stored < nbytes or end > file_size:
            raise BlobError(
                f"shape {list(dataset.shape)} needs {nbytes:,} bytes but the file stores "
                f"{min(stored, max(file_size - (offset or 0), 0)):,} (truncated?)",
                **where,
            )
    elif nbytes > _MAX_RATIO * stored + 65536:
        raise BlobError(
            f"shape {list(dataset.shape)} needs {nbytes:,} bytes from {stored:,} compressed "
            "ones: more than any compression can hold (corrupt?)",
            **where,
        )


def read_hdf5(path: str | os.PathLike[str], *, max_memory: Any = None) -> Weights:
    """Read an HDF5 caffemodel into named float32 blobs. The values every dataset declares
    must fit the memory budget (``max_memory``, default a share of the available memory) before any
    is read: compressed data can declare a thousand times its size."""
    import h5py

    path = Path(path)
    fd, file_size = open_regular(path)
    try:
        head = os.read(fd, 4096)
    finally:
        os.close(fd)
    kind = sniff(head)
    problem = explain(kind, head, "HDF5 caffemodel")
    if problem is None and kind is not Kind.HDF5:
        problem = "not an HDF5 file (no HDF5 signature)"
    if problem:
        raise FileFormatError(problem, path=str(path))
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise _open_error(path, exc) from None
    where: dict[str, Any] = {"path": str(path)}
    try:
        with handle:
            _check_links(handle, str(path))
            return _read_open(handle, file_size, where, max_memory)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        # libhdf5 reports a damaged file through whichever exception h5py maps its error to.
        detail = str(exc).replace("Unable to synchronously ", "cannot ")
        raise FileFormatError(f"corrupt HDF5 file ({detail})", **where) from None


def _read_open(handle: Any, file_size: int, where: dict[str, Any], max_memory: Any) -> Weights:
    import h5py

    from ..budget import format_size, resolve

    path = where["path"]
    weights = Weights(path=path, format="hdf5")
    if "data" not in handle or not isinstance(handle["data"], h5py.Group):
        raise FileFormatError("no /data group: not an HDF5 caffemodel", path=path)
    found: list[tuple[str, list[Any]]] = []
    declared = 0
    for layer, group in _layers(handle["data"]).items():
        where["layer"] = layer
        datasets = {k for k, v in group.items() if isinstance(v, h5py.Dataset)}
        names = [str(i) for i in range(len(datasets))]
        if datasets != set(names):
            raise BlobError(
                f"blob datasets must be named 0..{len(datasets) - 1}, found "
                f"{', '.join(sorted(map(str, datasets)))}",
                **where,
            )
        for index in names:
            where["blob"] = index
            dataset = group[index]
            _check_dataset(dataset, file_size, where)
            count = int(np.prod(dataset.shape, dtype=object))
            declared += count * (4 + (dataset.dtype.itemsize if dataset.dtype != np.float32 else 0))
        where.pop("blob")
        found.append((layer, [group[index] for index in names]))
    where.pop("layer", None)
    resolve(max_memory).require(
        declared, f"reading its datasets ({format_size(declared)} of values declared)", path=path
    )
    for layer, datasets in found:
        where["layer"] = layer
        weights.blobs[layer] = [np.asarray(d[()], dtype=np.float32) for d in datasets]
    where.pop("layer", None)
    return weights


def write_hdf5(path: str | os.PathLike[str], blobs: Mapping[str, Sequence[np.ndarray]]) -> None:
    """Write blobs in Caffe's HDF5 snapshot layout (atomically)."""
    import h5py

    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        data = handle.create_group("data")
        handle.create_group("diff")
        for layer, arrays in blobs.items():
            if not arrays:
                continue
            # require_group: "a/b" may come before or after "a", as nested groups either way.
            group = data.require_group(layer)
            for index, array in enumerate(arrays):
                group.create_dataset(str(index), data=np.asarray(array, dtype=np.float32))
