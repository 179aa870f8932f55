"""Caffe's ``Datum`` records (what ``convert_imageset`` puts in LMDB/LevelDB) -> C x H x W arrays.

A Datum holds raw bytes (``data``, uint8 C x H x W), or floats (``float_data``, written unpacked:
five bytes a value), or an encoded image file (``encoded: true``: JPEG/PNG bytes, decoded here
through the project's photo reader and its limits, colour as stored unless ``force_color`` or
``force_gray``). Declared sizes are checked against the bytes present before anything is
allocated; a bad record is one line naming the database and key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...app.images import MAX_PIXELS, decode_photo
from ...errors import CaffeCompatError, FileFormatError
from ...io.blobs import _unpacked_run
from ...io.wire import I32, LEN, VARINT, WireError, read_field

_CHANNELS, _HEIGHT, _WIDTH, _DATA, _LABEL, _FLOAT_DATA, _ENCODED = 1, 2, 3, 4, 5, 6, 7
_MAX_VALUES = 1 << 31  # Caffe's int count


@dataclass
class Record:
    """One decoded Datum: the item (C, H, W) as uint8 or float32, and its label."""

    item: np.ndarray
    label: int


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def decode_datum(
    buf: bytes | memoryview,
    where: str,
    *,
    force_color: bool = False,
    force_gray: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> Record:
    """Decode one serialised Datum; ``where`` names it in errors (``db: key``)."""
    view = memoryview(buf)
    dims = {_CHANNELS: 0, _HEIGHT: 0, _WIDTH: 0}
    label, encoded = 0, False
    data: memoryview | None = None
    floats: list[np.ndarray] = []
    try:
        pos, end = 0, len(view)
        while pos < end:
            f = read_field(view, pos, end)
            pos = f.end
            if f.number in dims and f.wire_type == VARINT:
                dims[f.number] = _int32(f.value)
            elif f.number == _LABEL and f.wire_type == VARINT:
                label = _int32(f.value)
            elif f.number == _ENCODED and f.wire_type == VARINT:
                encoded = bool(f.value)
            elif f.number == _DATA and f.wire_type == LEN:
                data = view[f.start : f.end]
            elif f.number == _FLOAT_DATA and f.wire_type == I32:
                count = _unpacked_run(_Buf(view), f.tag_start, end, view[f.tag_start], 4)
                rows = np.frombuffer(
                    view, dtype=[("tag", "u1"), ("value", "<f4")], count=count, offset=f.tag_start
                )
                floats.append(rows["value"])
                pos = f.tag_start + 5 * count
            elif f.number == _FLOAT_DATA and f.wire_type == LEN:
                if (f.end - f.start) % 4:
                    raise WireError("packed float_data is not a multiple of 4 bytes", f.tag_start)
                floats.append(np.frombuffer(view[f.start : f.end], dtype="<f4"))
    except WireError as exc:
        raise FileFormatError(f"{where}: not a Datum ({exc.reason} at byte {exc.offset})") from None
    if encoded:
        if data is None or not len(data):
            raise FileFormatError(f"{where}: an encoded Datum without image bytes")
        mode = "color" if force_color else "gray" if force_gray else "native"
        try:
            image = decode_photo(bytes(data), where, max_pixels=max_pixels, mode=mode)
        except CaffeCompatError as exc:
            raise FileFormatError(exc.reason, path=where) from None
        if image.dtype != np.uint8:
            raise FileFormatError(f"{where}: the encoded image is {image.dtype}, not 8-bit")
        item = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        return Record(np.ascontiguousarray(item), label)
    c, h, w = dims[_CHANNELS], dims[_HEIGHT], dims[_WIDTH]
    if min(c, h, w) <= 0:
        raise FileFormatError(f"{where}: Datum of {c}x{h}x{w} (every size must be > 0)")
    count = c * h * w
    if count >= _MAX_VALUES:
        raise FileFormatError(f"{where}: Datum of {c}x{h}x{w} is too large")
    if data is not None and len(data):
        if len(data) != count:
            raise FileFormatError(
                f"{where}: Datum declares {c}x{h}x{w} = {count} values but holds {len(data)} bytes"
            )
        return Record(np.frombuffer(data, dtype=np.uint8).reshape(c, h, w).copy(), label)
    stored = sum(int(a.size) for a in floats)
    if stored != count:
        raise FileFormatError(
            f"{where}: Datum declares {c}x{h}x{w} = {count} values but holds {stored} floats"
        )
    values = np.concatenate(floats) if len(floats) > 1 else floats[0].copy()
    return Record(values.astype(np.float32, copy=False).reshape(c, h, w), label)


class _Buf:
    """The one attribute ``_unpacked_run`` reads of a ByteSource."""

    def __init__(self, view: memoryview) -> None:
        self.buf = view


def encode_datum(item: np.ndarray, label: int = 0, *, encoded: bytes | None = None) -> bytes:
    """A serialised Datum, as ``convert_imageset`` writes one (raw uint8 C x H x W, floats, or
    ``encoded`` image bytes): for tests and for tools that build databases."""
    from ...proto import caffe_pb2

    datum = caffe_pb2.Datum()
    datum.label = int(label)
    if encoded is not None:
        datum.data = encoded
        datum.encoded = True
        return datum.SerializeToString()
    c, h, w = item.shape
    datum.channels, datum.height, datum.width = int(c), int(h), int(w)
    if item.dtype == np.uint8:
        datum.data = np.ascontiguousarray(item).tobytes()
    else:
        datum.float_data.extend(np.asarray(item, dtype=np.float32).reshape(-1).tolist())
    return datum.SerializeToString()
