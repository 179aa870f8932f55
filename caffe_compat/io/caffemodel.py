"""Binary .caffemodel reader for both wire layouts: V2 (``layer``, field 100) and V1 (``layers``,
field 2, enum types).

Only the outline of the file is walked by hand (see wire.py); each layer's definition is parsed by
protobuf with its blobs left out, and each blob's floats go straight from the file into a numpy
array. Every declared length is checked against the bytes actually present before any allocation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BlobError, FileFormatError
from ..proto import caffe_pb2
from .blobs import read_blob, scan_blob
from .sniff import Kind, explain, sniff
from .source import ByteSource
from .upgrade import v1_layer_to_v2
from .weights import Weights
from .wire import LEN, WireError, read_field

_NET_LAYER_V2, _NET_LAYER_V1 = 100, 2
_BLOBS_V2, _BLOBS_V1, _V0_LAYER = 7, 6, 1


def _fail(src: ByteSource, exc: WireError, what: str, layer: str | None = None) -> FileFormatError:
    """Turn a wire error into a one-line diagnosis; truncation says by how much."""
    reason = f"{what}: {exc.reason} at byte {exc.offset}"
    if "remain" in exc.reason or "past the end" in exc.reason:
        reason += f" (the file is {len(src)} bytes: truncated or incomplete download?)"
    return FileFormatError(reason, path=src.path, layer=layer)


def _read_layer(
    src: ByteSource, start: int, end: int, v1: bool, copy: bool
) -> tuple[caffe_pb2.LayerParameter, list[np.ndarray]]:
    """Decode one layer message: its definition via protobuf, its blobs via the fast path."""
    blob_field = _BLOBS_V1 if v1 else _BLOBS_V2
    rest: list[bytes] = []
    blob_spans: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        f = read_field(src.buf, pos, end)
        pos = f.end
        if f.number == blob_field and f.wire_type == LEN:
            blob_spans.append((f.start, f.end))
        elif v1 and f.number == _V0_LAYER:
            raise WireError("V0 layer definitions (before 2014) are not supported", f.tag_start)
        else:
            rest.append(bytes(src.buf[f.tag_start : f.end]))
    message = caffe_pb2.V1LayerParameter() if v1 else caffe_pb2.LayerParameter()
    try:
        message.ParseFromString(b"".join(rest))
    except Exception as exc:  # protobuf's DecodeError carries no position
        raise WireError(f"layer definition does not decode ({exc})", start) from None
    layer = v1_layer_to_v2(message) if v1 else message
    arrays = []
    for index, (b_start, b_end) in enumerate(blob_spans):
        try:
            span = scan_blob(src, b_start, b_end)
            arrays.append(read_blob(src, span, copy=copy))
        except WireError as exc:
            raise BlobError(
                f"{exc.reason} at byte {exc.offset}",
                path=src.path,
                layer=layer.name,
                layer_type=layer.type,
                blob=str(index),
            ) from None
        except ValueError as exc:
            raise BlobError(
                str(exc), path=src.path, layer=layer.name, layer_type=layer.type, blob=str(index)
            ) from None
    return layer, arrays


def read_caffemodel_source(src: ByteSource, *, copy: bool = True) -> Weights:
    """Read weights from an open source (file map or bytes)."""
    kind = sniff(bytes(src.buf[:4096]))
    problem = explain(kind, bytes(src.buf[:4096]), "binary caffemodel")
    if problem is None and kind is Kind.TEXT:
        problem = (
            "this is a text file, not a binary caffemodel: did you swap the prototxt and the "
            "weights arguments?"
        )
    if problem:
        raise FileFormatError(problem, path=src.path)
    weights = Weights(path=src.path, format="caffemodel-v2")
    header: list[bytes] = []
    formats: set[str] = set()
    pos, end = 0, len(src)
    while pos < end:
        try:
            f = read_field(src.buf, pos, end)
        except WireError as exc:
            raise _fail(src, exc, "not a readable caffemodel") from None
        pos = f.end
        if f.number in (_NET_LAYER_V2, _NET_LAYER_V1) and f.wire_type == LEN:
            v1 = f.number == _NET_LAYER_V1
            formats.add("caffemodel-v1" if v1 else "caffemodel-v2")
            try:
                layer, arrays = _read_layer(src, f.start, f.end, v1, copy)
            except WireError as exc:
                raise _fail(src, exc, f"layer #{len(weights.layers) + 1} is corrupt") from None
            if layer.name in weights.layers:
                weights.duplicates.append(layer.name)
            del layer.blobs[:]
            weights.layers[layer.name] = layer
            if arrays or layer.name not in weights.blobs:
                weights.blobs[layer.name] = arrays
        else:
            header.append(bytes(src.buf[f.tag_start : f.end]))
    if not formats:
        raise FileFormatError(
            "no layers found: this is not a Caffe model (or an empty NetParameter)", path=src.path
        )
    if len(formats) > 1:
        raise FileFormatError("file mixes V1 `layers` and V2 `layer` entries", path=src.path)
    weights.format = formats.pop()
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(b"".join(header))
    except Exception as exc:
        raise FileFormatError(f"net header does not decode ({exc})", path=src.path) from None
    weights.net_name = net.name
    return weights


def read_caffemodel(path: str | os.PathLike[str], *, copy: bool = True) -> Weights:
    """Read a binary caffemodel (V1 or V2); ``copy=False`` gives read-only views of a file map."""
    with ByteSource.open(Path(path)) as src:
        return read_caffemodel_source(src, copy=copy)


def read_caffemodel_bytes(data: bytes, *, name: str = "<bytes>") -> Weights:
    """Read a caffemodel already in memory."""
    return read_caffemodel_source(ByteSource(data, path=name), copy=True)
