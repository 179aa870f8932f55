"""BlobProto on the wire -> numpy array, validated before anything is allocated.

One decoder for every binary reader (caffemodel V1/V2, mean.binaryproto). Shape rules follow
Caffe's ``Blob::FromProto``: legacy num/channels/height/width win when any of them is present,
otherwise ``shape.dim``; ``double_data`` is used when present, else ``data``; ``diff`` is skipped.
facebook/C3D v1.0's 5-D BlobProto (its own numbering, told by a varint at BVLC's data field) is
read as num x channels x length x height x width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError

from ..proto import caffe_pb2
from .source import ByteSource
from .wire import I32, I64, LEN, VARINT, WireError, read_field

_DATA, _DIFF, _DOUBLE_DATA, _DOUBLE_DIFF = 5, 6, 8, 9
_BULK = {_DATA, _DIFF, _DOUBLE_DATA, _DOUBLE_DIFF}
# facebook/C3D v1.0's BlobProto: num 1, channels 2, length 3, height 4, width 5 (a varint where
# BVLC has its packed data), data 6, diff 7. Read as BVLC's numbers: data and diff one lower.
_C3D_DIMS = (1, 2, 3, 4, 5)
_C3D_RENUMBER = {6: _DATA, 7: _DIFF}


def _is_c3d_blob(src: ByteSource, start: int, end: int) -> bool:
    """A blob whose field 5 is a varint is C3D v1.0's 5-D layout (BVLC's 5 is packed floats)."""
    pos = start
    while pos < end:
        f = read_field(src.buf, pos, end)
        if f.number == _DATA:
            return f.wire_type == VARINT
        pos = f.end
    return False


@dataclass(frozen=True)
class Chunk:
    """A run of values on the wire: one packed field, or ``count`` consecutive unpacked fields."""

    offset: int  # first value byte (packed) or first tag byte (unpacked)
    count: int
    packed: bool


@dataclass
class BlobSpan:
    """Where a blob's pieces lie in the source; nothing is decoded but the small header."""

    header: caffe_pb2.BlobProto
    data: list[Chunk] = field(default_factory=list)
    double_data: list[Chunk] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        return blob_shape(self.header)

    @property
    def stored_count(self) -> int:
        chunks = self.double_data or self.data
        return sum(c.count for c in chunks)


def blob_shape(header: caffe_pb2.BlobProto) -> tuple[int, ...]:
    """The blob's shape by Caffe's rule: legacy 4-D fields first, then ``shape.dim``."""
    legacy = ("num", "channels", "height", "width")
    if any(header.HasField(name) for name in legacy):
        return tuple(int(getattr(header, name)) for name in legacy)
    return tuple(int(d) for d in header.shape.dim)


def _unpacked_run(src: ByteSource, tag_start: int, end: int, tag: int, width: int) -> int:
    """How many consecutive unpacked values with this one-byte tag start at ``tag_start``.

    Looks at a doubling window of records, so a short run costs little even in a huge message.
    """
    record = 1 + width
    available = (end - tag_start) // record
    count, window = 0, 1024
    while count < available:
        n = min(window, available - count)
        offset = tag_start + count * record
        tags = np.frombuffer(src.buf, dtype=np.uint8, count=n * record, offset=offset)[::record]
        mismatch = np.flatnonzero(tags != tag)
        if mismatch.size:
            return count + int(mismatch[0])
        count += n
        window *= 2
    return count


def scan_blob(src: ByteSource, start: int, end: int) -> BlobSpan:
    """Locate a BlobProto's data without decoding it; parse everything else with protobuf."""
    header_parts: list[bytes] = []
    span_data: list[Chunk] = []
    span_double: list[Chunk] = []
    c3d = _is_c3d_blob(src, start, end)
    dims = dict.fromkeys(_C3D_DIMS, 0)
    pos = start
    while pos < end:
        f = read_field(src.buf, pos, end)
        pos = f.end
        if c3d:
            if f.number in dims and f.wire_type == VARINT:
                dims[f.number] = f.value
                continue
            f = f._replace(number=_C3D_RENUMBER.get(f.number, 0))
            if not f.number:
                continue  # nothing else is in C3D's BlobProto
        if f.number not in _BULK:
            header_parts.append(bytes(src.buf[f.tag_start : f.end]))
            continue
        if f.number in (_DIFF, _DOUBLE_DIFF):
            width = {I32: 4, I64: 8}.get(f.wire_type, 0)
            if width and f.end - f.tag_start == 1 + width:  # skip the whole unpacked run
                tag = src.buf[f.tag_start]
                pos = f.tag_start + (1 + width) * _unpacked_run(src, f.tag_start, end, tag, width)
            continue  # gradients are never needed for inference
        width = 4 if f.number == _DATA else 8
        target = span_data if f.number == _DATA else span_double
        if f.wire_type == LEN:
            if (f.end - f.start) % width:
                raise WireError(
                    f"packed {'float' if width == 4 else 'double'} data of "
                    f"{f.end - f.start} bytes is not a multiple of {width}",
                    f.tag_start,
                )
            target.append(Chunk(f.start, (f.end - f.start) // width, True))
        elif f.wire_type == (I32 if width == 4 else I64) and f.end - f.tag_start == 1 + width:
            count = _unpacked_run(src, f.tag_start, end, src.buf[f.tag_start], width)
            target.append(Chunk(f.tag_start, count, False))
            pos = f.tag_start + (1 + width) * count
        else:
            raise WireError(f"blob data field {f.number} has wire type {f.wire_type}", f.tag_start)
    header = caffe_pb2.BlobProto()
    try:
        header.ParseFromString(b"".join(header_parts))
    except DecodeError as exc:  # carries no position: point at the blob
        raise WireError(f"blob header does not decode ({exc})", start) from None
    if c3d:
        header.shape.dim.extend(dims.values())
    return BlobSpan(header, span_data, span_double)


def check_blob(span: BlobSpan) -> tuple[int, ...]:
    """Validate shape against stored values before any allocation; return the shape.

    Raises ``ValueError`` with the reason; callers attach file, layer and blob names.
    """
    shape = span.shape
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {list(shape)}")
    declared = math.prod(shape)
    stored = span.stored_count
    if declared != stored:
        kind = "double_data" if span.double_data else "data"
        raise ValueError(
            f"shape {list(shape)} declares {declared} values but the file holds {stored} in {kind}"
        )
    return shape


def read_blob(src: ByteSource, span: BlobSpan, *, copy: bool = True) -> np.ndarray:
    """Materialise a validated blob as float32 in its declared shape (zero-copy when possible)."""
    shape = check_blob(span)
    double = bool(span.double_data)
    chunks = span.double_data if double else span.data
    dtype = "<f8" if double else "<f4"
    if len(chunks) == 1 and chunks[0].packed:
        # Doubles are converted below, which copies anyway: read them through a view.
        flat = src.array(chunks[0].offset, chunks[0].count, dtype, copy=copy and not double)
    else:
        pieces = []
        for chunk in chunks:
            if chunk.packed:
                pieces.append(src.array(chunk.offset, chunk.count, dtype, copy=False))
            else:
                record = np.dtype([("tag", "u1"), ("value", dtype)])
                rows = np.frombuffer(src.buf, dtype=record, count=chunk.count, offset=chunk.offset)
                pieces.append(rows["value"])
        flat = np.concatenate(pieces) if pieces else np.empty(0, dtype=dtype)
    if flat.dtype != np.float32:
        with np.errstate(over="ignore"):  # Caffe's static_cast<float>: out of range -> inf
            flat = flat.astype(np.float32)
    return flat.reshape(shape)
