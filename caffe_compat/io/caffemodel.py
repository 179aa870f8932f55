"""Binary .caffemodel reader for every wire layout: V2 (``layer``, field 100), V1 (``layers``,
field 2, enum types) and pre-2014 V0 (V1 ``layers`` wrapping a ``layer``, blobs inside it).

Only the outline of the file is walked by hand (see wire.py); each layer's definition is parsed by
protobuf with its blobs left out, and each blob's floats go straight from the file into a numpy
array. Every declared length is checked against the bytes actually present before any allocation.
Errors name the layer (as far as the file got) and the blob, and tell truncation from corruption.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import BlobError, CaffeCompatError, FileFormatError
from ..proto import caffe_pb2
from .blobs import check_blob, read_blob, scan_blob
from .messages import bad_text
from .sniff import Kind, explain, sniff
from .source import ByteSource
from .upgrade import V1_TYPE_NAMES, v1_layer_to_v2
from .upgrade_v0 import is_padding, upgrade_v0_layers
from .weights import Weights
from .wire import LEN, VARINT, Field, WireError, read_field, read_varint

_NET_LAYER_V2, _NET_LAYER_V1 = 100, 2
_BLOBS_V2, _BLOBS_V1, _V0_LAYER = 7, 6, 1
_NAME_V2, _NAME_V1, _TYPE_V2, _TYPE_V1 = 1, 4, 2, 5
_NAME_V0, _TYPE_V0, _BLOBS_V0 = 1, 2, 50


@dataclass
class _Where:
    """What is known so far about the layer being read, for error messages."""

    index: int  # 1-based position among the file's layers
    name: str | None = None
    type: str | None = None

    def note(self, src: ByteSource, f: Field, v1: bool) -> None:
        """Pick up the layer's name and type as the walk passes them."""
        if f.number == (_NAME_V1 if v1 else _NAME_V2) and f.wire_type == LEN:
            self.name = bytes(src.buf[f.start : f.end]).decode("utf-8", "replace")
        elif v1 and f.number == _TYPE_V1 and f.wire_type == VARINT:
            self.type = V1_TYPE_NAMES.get(f.value) or f"enum {f.value}"
        elif not v1 and f.number == _TYPE_V2 and f.wire_type == LEN:
            self.type = bytes(src.buf[f.start : f.end]).decode("utf-8", "replace")

    def error(
        self, src: ByteSource, reason: str, *, blob: int | None = None, cls: type = FileFormatError
    ) -> CaffeCompatError:
        if self.name is None:
            reason = f"layer #{self.index} (before its name): {reason}"
        return cls(
            reason,
            path=src.path,
            layer=self.name,
            layer_type=self.type or None,
            blob=None if blob is None else str(blob),
        )


def _field_number(src: ByteSource, pos: int, end: int) -> int | None:
    """The number of the field whose tag starts at ``pos``, if the tag itself is readable."""
    try:
        return read_varint(src.buf, pos, end)[0] >> 3
    except WireError:
        return None


def _split_v0(src: ByteSource, f: Field, where: _Where, blob_spans: list[tuple[int, int]]) -> bytes:
    """A V0 inner ``layer``: its blobs' spans go to ``blob_spans``, the rest comes back as bytes."""
    rest: list[bytes] = []
    pos = f.start
    while pos < f.end:
        try:
            g = read_field(src.buf, pos, f.end)
        except WireError as exc:
            blob = len(blob_spans) if _field_number(src, pos, f.end) == _BLOBS_V0 else None
            reason = f"corrupt {'blob' if blob is not None else 'V0 layer'}: {exc.reason}"
            raise where.error(src, f"{reason} at byte {exc.offset}", blob=blob) from None
        pos = g.end
        if g.number == _BLOBS_V0 and g.wire_type == LEN:
            blob_spans.append((g.start, g.end))
            continue
        _note_v0(src, g, where)
        rest.append(bytes(src.buf[g.tag_start : g.end]))
    return b"".join(rest)


def _note_v0(src: ByteSource, g: Field, where: _Where) -> None:
    """Pick up a V0 layer's name and type (fields of the inner ``layer``) for error messages."""
    if g.number in (_NAME_V0, _TYPE_V0) and g.wire_type == LEN:
        text = bytes(src.buf[g.start : g.end]).decode("utf-8", "replace")
        if g.number == _NAME_V0:
            where.name = text
        else:
            where.type = text


def _walk_v0(src: ByteSource, start: int, end: int, where: _Where) -> int | None:
    """Note what a (possibly cut-off) V0 inner layer names; the index of the blob it ends in."""
    blobs, q = 0, start
    while q < end:
        try:
            g = read_field(src.buf, q, end)
        except WireError:
            return blobs if _field_number(src, q, end) == _BLOBS_V0 else None
        _note_v0(src, g, where)
        blobs += g.number == _BLOBS_V0 and g.wire_type == LEN
        q = g.end
    return None


def _read_layer(
    src: ByteSource, start: int, end: int, v1: bool, copy: bool, where: _Where
) -> tuple[caffe_pb2.LayerParameter | caffe_pb2.V1LayerParameter, list[np.ndarray]]:
    """Decode one layer message: its definition via protobuf, its blobs via the fast path.

    A V0 layer comes back as its V1 wrapper, not upgraded: that needs the whole net.
    """
    blob_field = _BLOBS_V1 if v1 else _BLOBS_V2
    rest: list[bytes] = []
    blob_spans: list[tuple[int, int]] = []
    v0_parts: list[bytes] = []
    v0_spans: list[tuple[int, int]] = []  # Caffe's V0 upgrade reads only the inner layer's blobs
    pos = start
    while pos < end:
        try:
            f = read_field(src.buf, pos, end)
        except WireError as exc:
            blob = len(blob_spans) if _field_number(src, pos, end) == blob_field else None
            reason = f"corrupt {'blob' if blob is not None else 'layer'}: {exc.reason}"
            raise where.error(src, f"{reason} at byte {exc.offset}", blob=blob) from None
        pos = f.end
        where.note(src, f, v1)
        if f.number == blob_field and f.wire_type == LEN:
            blob_spans.append((f.start, f.end))
        elif v1 and f.number == _V0_LAYER and f.wire_type == LEN:
            v0_parts.append(_split_v0(src, f, where, v0_spans))
        else:
            rest.append(bytes(src.buf[f.tag_start : f.end]))
    message = caffe_pb2.V1LayerParameter() if v1 else caffe_pb2.LayerParameter()
    try:
        message.ParseFromString(b"".join(rest))
    except DecodeError as exc:  # protobuf's DecodeError carries no position
        raise where.error(src, f"layer definition does not decode ({exc})") from None
    if v0_parts:
        try:
            for part in v0_parts:
                message.layer.MergeFromString(part)
        except DecodeError as exc:
            raise where.error(src, f"V0 layer definition does not decode ({exc})") from None
        blob_spans = v0_spans
    field = bad_text(message)
    if field:
        raise where.error(src, f"layer definition: field {field} is not UTF-8 text (corrupt?)")
    layer: caffe_pb2.LayerParameter | caffe_pb2.V1LayerParameter = message
    if v1 and not v0_parts:
        try:
            layer = v1_layer_to_v2(message)
        except CaffeCompatError as exc:
            raise where.error(src, exc.reason) from None
        where.name, where.type = layer.name, layer.type
    arrays = []
    for index, (b_start, b_end) in enumerate(blob_spans):
        try:
            span = scan_blob(src, b_start, b_end)
            arrays.append(read_blob(src, span, copy=copy))
        except WireError as exc:
            reason = f"corrupt blob: {exc.reason} at byte {exc.offset}"
            raise where.error(src, reason, blob=index, cls=BlobError) from None
        except ValueError as exc:
            raise where.error(src, str(exc), blob=index, cls=BlobError) from None
    return layer, arrays


def _truncation(src: ByteSource, pos: int, index: int) -> CaffeCompatError:
    """Diagnose a top-level field that runs past the end of the file: which layer, which blob."""
    size = len(src)
    tail = f"(the file is {size:,} bytes: incomplete download, or corrupt)"
    try:
        key, p = read_varint(src.buf, pos, size)
    except WireError:
        key, p = 0, size
    if key & 7 != LEN or key >> 3 not in (_NET_LAYER_V2, _NET_LAYER_V1):
        return FileFormatError(
            f"truncated: the file ends inside a field at byte {pos} {tail}", path=src.path
        )
    try:
        length, start = read_varint(src.buf, p, size)
    except WireError:
        return _Where(index).error(src, f"truncated: the file ends inside its length {tail}")
    v1 = key >> 3 == _NET_LAYER_V1
    blob_field = _BLOBS_V1 if v1 else _BLOBS_V2
    where = _Where(index)
    blob: int | None = None
    blobs, q = 0, start
    while q < size:
        try:
            f = read_field(src.buf, q, size)
        except WireError:
            number = _field_number(src, q, size)
            if v1 and number == _V0_LAYER:  # cut off inside the inner V0 layer: look inside
                try:
                    inner = read_varint(src.buf, read_varint(src.buf, q, size)[1], size)[1]
                except WireError:
                    break
                blob = _walk_v0(src, inner, size, where)
            elif number == blob_field:
                blob = blobs
            break
        where.note(src, f, v1)
        if v1 and f.number == _V0_LAYER and f.wire_type == LEN:
            _walk_v0(src, f.start, f.end, where)
        blobs += f.number == blob_field and f.wire_type == LEN
        q = f.end
    short = start + length - size
    reason = f"truncated: the file ends {short:,} bytes before the end of this layer {tail}"
    return where.error(src, reason, blob=blob)


def _store(weights: Weights, layer: caffe_pb2.LayerParameter, arrays: list[np.ndarray]) -> None:
    """File one layer's definition and blobs; a later empty duplicate keeps the earlier blobs."""
    if layer.name in weights.layers:
        weights.duplicates.append(layer.name)
    del layer.blobs[:]
    weights.layers[layer.name] = layer
    if arrays or layer.name not in weights.blobs:
        weights.blobs[layer.name] = arrays


def _store_v0(
    weights: Weights,
    entries: list[tuple[caffe_pb2.V1LayerParameter, list[np.ndarray]]],
    inputs: list[str],
    path: str,
) -> None:
    """Upgrade a V0 file's layers together (padding layers fold away, as Caffe does on read)."""
    upgraded = upgrade_v0_layers([entry for entry, _ in entries], inputs, path=path)
    kept = [arrays for entry, arrays in entries if not is_padding(entry)]
    for old, arrays in zip(upgraded, kept):
        _store(weights, v1_layer_to_v2(old), arrays)


def _not_a_model(src: ByteSource) -> str:
    """Why a file without layers is no caffemodel: a mean image is the usual mix-up."""
    try:
        shape = check_blob(scan_blob(src, 0, len(src)))
    except (WireError, ValueError):
        return "no layers found: this is not a Caffe model (or an empty NetParameter)"
    return (
        f"this is a single BlobProto of shape {list(shape)} (a mean.binaryproto image?), "
        "not a caffemodel"
    )


def read_caffemodel_source(src: ByteSource, *, copy: bool = True) -> Weights:
    """Read weights from an open source (file map or bytes)."""
    head = src.head()
    kind = sniff(head)
    problem = explain(kind, head, "binary caffemodel")
    if problem is None and kind is Kind.TEXT:
        problem = (
            "this is a text file, not a binary caffemodel: did you swap the prototxt and the "
            "weights arguments?"
        )
    elif problem is None and kind is Kind.HDF5:
        problem = "this is an HDF5 file: read it with read_hdf5 (or read_weights)"
    if problem:
        raise FileFormatError(problem, path=src.path)
    weights = Weights(path=src.path, format="caffemodel-v2")
    header: list[bytes] = []
    formats: set[str] = set()
    v0_entries: list[tuple[caffe_pb2.V1LayerParameter, list[np.ndarray]]] = []
    pos, end, count = 0, len(src), 0
    while pos < end:
        try:
            f = read_field(src.buf, pos, end)
        except WireError as exc:
            if "remain" in exc.reason or "past the end" in exc.reason:
                raise _truncation(src, pos, count + 1) from None
            after = f' after layer "{next(reversed(weights.layers))}"' if weights.layers else ""
            raise FileFormatError(
                f"not a readable caffemodel: {exc.reason} at byte {exc.offset}{after}",
                path=src.path,
            ) from None
        pos = f.end
        if f.number in (_NET_LAYER_V2, _NET_LAYER_V1) and f.wire_type == LEN:
            v1 = f.number == _NET_LAYER_V1
            count += 1
            layer, arrays = _read_layer(src, f.start, f.end, v1, copy, _Where(count))
            if isinstance(layer, caffe_pb2.V1LayerParameter):  # V0: upgraded after the walk
                formats.add("caffemodel-v0")
                v0_entries.append((layer, arrays))
                continue
            formats.add("caffemodel-v1" if v1 else "caffemodel-v2")
            _store(weights, layer, arrays)
        else:
            header.append(bytes(src.buf[f.tag_start : f.end]))
    if not formats:
        raise FileFormatError(_not_a_model(src), path=src.path)
    if formats == {"caffemodel-v0", "caffemodel-v1"}:
        raise FileFormatError("file mixes V0 and plain V1 `layers` entries", path=src.path)
    if len(formats) > 1:
        raise FileFormatError("file mixes V1 `layers` and V2 `layer` entries", path=src.path)
    weights.format = formats.pop()
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(b"".join(header))
    except DecodeError as exc:
        raise FileFormatError(f"net header does not decode ({exc})", path=src.path) from None
    field = bad_text(net)
    if field:
        raise FileFormatError(f"net header: field {field} is not UTF-8 text", path=src.path)
    weights.net_name = net.name
    if v0_entries:
        _store_v0(weights, v0_entries, list(net.input), src.path)
    return weights


def read_caffemodel(path: str | os.PathLike[str], *, copy: bool = True) -> Weights:
    """Read a binary caffemodel (V0, V1 or V2); ``copy=False`` gives read-only views of a file
    map."""
    with ByteSource.open(Path(path)) as src:
        return read_caffemodel_source(src, copy=copy)


def read_caffemodel_bytes(data: bytes, *, name: str = "<bytes>") -> Weights:
    """Read a caffemodel already in memory."""
    return read_caffemodel_source(ByteSource(data, path=name), copy=True)
