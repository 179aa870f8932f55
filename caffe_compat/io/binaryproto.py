"""BlobProto files: mean images (``mean.binaryproto``, one 1xCxHxW float image) and any other
single blob a net reads from disk (InfogainLoss's matrix H)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BlobError, FileFormatError
from .blobs import read_blob, scan_blob
from .sniff import Kind, explain, sniff
from .source import ByteSource
from .wire import LEN, WireError, read_field

_NET_LAYER_FIELDS = (100, 2)  # NetParameter.layer / .layers: never a BlobProto's first field


def _looks_like_caffemodel(src: ByteSource) -> bool:
    try:
        first = read_field(src.buf, 0, len(src))
    except WireError:
        return False
    return first.wire_type == LEN and first.number in (*_NET_LAYER_FIELDS, 1)


def read_blobproto(path: str | os.PathLike[str], what: str = "binaryproto blob") -> np.ndarray:
    """One BlobProto file as a float32 array in its stored shape."""
    with ByteSource.open(Path(path)) as src:
        head = src.head()
        kind = sniff(head)
        problem = explain(kind, head, f"{what} file")
        if problem is None and kind in (Kind.TEXT, Kind.HDF5):
            problem = f"this is a {kind.value} file, not a {what}"
        if problem is None and _looks_like_caffemodel(src):
            problem = f"this is a caffemodel (a NetParameter), not a {what}"
        if problem:
            raise FileFormatError(problem, path=src.path)
        try:
            span = scan_blob(src, 0, len(src))
            array = read_blob(src, span, copy=True)
        except WireError as exc:
            raise FileFormatError(
                f"not a readable BlobProto: {exc.reason} at byte {exc.offset}", path=src.path
            ) from None
        except ValueError as exc:
            raise BlobError(str(exc), path=src.path) from None
    return np.ascontiguousarray(array, dtype=np.float32)


def read_mean(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mean image as a (C, H, W) float32 array (channel order as stored: BGR for Caffe)."""
    array = read_blobproto(path, "binaryproto mean image")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.size == 0:
        raise BlobError(
            f"expected one 1xCxHxW (or CxHxW) mean image, found shape {list(array.shape)}",
            path=str(path),
        )
    return np.ascontiguousarray(array, dtype=np.float32)
