"""HDF5 caffemodels (Caffe's ``snapshot_format: HDF5``): ``/data/<layer>/<blob index>``.

The layout holds parameter blobs only, no layer definitions, so these weights always need the
prototxt. Dataset sizes are checked against the file before any read. Caffe creates each layer's
group with ``H5Gcreate2(data, name)``, so a layer named ``conv1/relu`` is a subgroup of ``conv1``:
a layer is any group holding datasets, named by its path below ``/data``.
"""

from __future__ import annotations

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


def _check_dataset(dataset: Any, file_size: int, where: dict) -> None:
    """Refuse a dataset whose declared size the file cannot hold, before reading it."""
    if dataset.dtype.kind != "f":
        raise BlobError(f"holds {dataset.dtype} values, not floats", **where)
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


def read_hdf5(path: str | os.PathLike[str]) -> Weights:
    """Read an HDF5 caffemodel into named float32 blobs."""
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
            return _read_open(handle, file_size, where)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        # libhdf5 reports a damaged file through whichever exception h5py maps its error to.
        detail = str(exc).replace("Unable to synchronously ", "cannot ")
        raise FileFormatError(f"corrupt HDF5 file ({detail})", **where) from None


def _read_open(handle: Any, file_size: int, where: dict[str, Any]) -> Weights:
    import h5py

    path = where["path"]
    weights = Weights(path=path, format="hdf5")
    if "data" not in handle or not isinstance(handle["data"], h5py.Group):
        raise FileFormatError("no /data group: not an HDF5 caffemodel", path=path)
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
        arrays = []
        for index in names:
            where["blob"] = index
            dataset = group[index]
            _check_dataset(dataset, file_size, where)
            arrays.append(np.asarray(dataset[()], dtype=np.float32))
        where.pop("blob")
        weights.blobs[layer] = arrays
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
