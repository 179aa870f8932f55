"""HDF5 caffemodels (Caffe's ``snapshot_format: HDF5``): ``/data/<layer>/<blob index>``.

The layout holds parameter blobs only, no layer definitions, so these weights always need the
prototxt. Dataset sizes are checked against the file before any read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import BlobError, FileFormatError
from .atomic import atomic_output
from .sniff import HDF5_MAGIC
from .weights import Weights


def _layers(group: object, prefix: str = "") -> dict[str, object]:
    """Groups whose members are all datasets named 0..n-1 are layers; names may contain '/'."""
    import h5py

    found: dict[str, object] = {}
    for key, item in group.items():  # type: ignore[attr-defined]
        name = f"{prefix}{key}"
        if isinstance(item, h5py.Group):
            members = list(item.keys())
            if members and all(isinstance(item[m], h5py.Dataset) for m in members):
                found[name] = item
            else:
                found.update(_layers(item, f"{name}/"))
    return found


def read_hdf5(path: str | os.PathLike[str]) -> Weights:
    """Read an HDF5 caffemodel into named float32 blobs."""
    import h5py

    path = Path(path)
    try:
        with path.open("rb") as handle:
            magic = handle.read(8)
    except FileNotFoundError:
        raise FileFormatError("no such file", path=str(path)) from None
    if magic != HDF5_MAGIC:
        raise FileFormatError("not an HDF5 file", path=str(path))
    file_size = path.stat().st_size
    weights = Weights(path=str(path), format="hdf5")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise FileFormatError(
            f"HDF5 file does not open ({exc}): truncated?", path=str(path)
        ) from None
    with handle:
        if "data" not in handle:
            raise FileFormatError("no /data group: not an HDF5 caffemodel", path=str(path))
        for layer, group in _layers(handle["data"]).items():
            count = len(group)  # type: ignore[arg-type]
            names = [str(i) for i in range(count)]
            if sorted(group.keys()) != sorted(names):  # type: ignore[attr-defined]
                raise BlobError(
                    f"blob datasets must be named 0..{count - 1}", path=str(path), layer=layer
                )
            arrays = []
            for index in names:
                dataset = group[index]  # type: ignore[index]
                nbytes = int(np.prod(dataset.shape, dtype=np.float64)) * dataset.dtype.itemsize
                stored = dataset.id.get_storage_size()
                if dataset.compression is None and dataset.chunks is None and stored < nbytes:
                    raise BlobError(
                        f"declares {nbytes} bytes but the file stores {stored} (truncated?)",
                        path=str(path),
                        layer=layer,
                        blob=index,
                    )
                if dataset.compression is None and nbytes > file_size:
                    raise BlobError(
                        f"declares {nbytes} bytes, more than the whole file ({file_size})",
                        path=str(path),
                        layer=layer,
                        blob=index,
                    )
                if dataset.dtype.kind != "f":
                    raise BlobError(
                        f"holds {dataset.dtype} values, not floats",
                        path=str(path),
                        layer=layer,
                        blob=index,
                    )
                try:
                    arrays.append(np.asarray(dataset[()], dtype=np.float32))
                except OSError as exc:
                    raise BlobError(
                        f"cannot be read ({exc}): truncated or corrupt",
                        path=str(path),
                        layer=layer,
                        blob=index,
                    ) from None
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
            group = data.create_group(layer)
            for index, array in enumerate(arrays):
                group.create_dataset(str(index), data=np.asarray(array, dtype=np.float32))
