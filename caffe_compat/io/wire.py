"""A minimal protobuf wire-format walker.

protobuf's Python API has no way to reach a packed ``repeated float`` without building one Python
float per value, which makes a 500 MB caffemodel take minutes and gigabytes. This walker only finds
field boundaries; everything that is not bulk numeric data is still parsed by protobuf itself. Every
length is checked against its enclosing message before anything is sliced or allocated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
_MAX_VARINT_BYTES = 10


class WireError(ValueError):
    """Malformed wire data at a byte offset; readers re-raise it with file and layer names."""

    def __init__(self, reason: str, offset: int) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(f"{reason} (at byte {offset})")


class Field(NamedTuple):
    """One field occurrence: its number, wire type and byte span ``[start, end)``.

    ``tag_start`` is where the field's tag begins, so ``buf[tag_start:end]`` is the whole field
    as it appears on the wire (used to re-serialise everything but the bulk data).
    For VARINT fields ``value`` holds the decoded integer; otherwise it is 0.
    """

    number: int
    wire_type: int
    tag_start: int
    start: int
    end: int
    value: int


def read_varint(buf: memoryview | bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; return (value, position after it)."""
    result = 0
    shift = 0
    begin = pos
    while True:
        if pos >= end:
            raise WireError("varint runs past the end of its message", begin)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if pos - begin >= _MAX_VARINT_BYTES:
            raise WireError("varint longer than 10 bytes", begin)


def write_varint(value: int) -> bytes:
    """``value`` as a protobuf varint (the inverse of :func:`read_varint`)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_key(number: int, wire_type: int) -> bytes:
    """A field's key: its number and wire type, as one varint."""
    return write_varint((number << 3) | wire_type)


def read_field(buf: memoryview | bytes, pos: int, end: int) -> Field:
    """Decode the field whose tag starts at ``pos``, checking that it fits before ``end``."""
    tag_start = pos
    key, pos = read_varint(buf, pos, end)
    number, wire_type = key >> 3, key & 7
    if number == 0:
        raise WireError("field number 0 (not protobuf data, or corrupt)", tag_start)
    value = 0
    if wire_type == VARINT:
        field_start = pos
        value, pos = read_varint(buf, pos, end)
    elif wire_type == LEN:
        length, field_start = read_varint(buf, pos, end)
        if length > end - field_start:
            raise WireError(
                f"field {number} declares {length} bytes but only "
                f"{end - field_start} remain in its message",
                tag_start,
            )
        pos = field_start + length
    elif wire_type == I32:
        field_start, pos = pos, pos + 4
    elif wire_type == I64:
        field_start, pos = pos, pos + 8
    else:
        raise WireError(f"unsupported wire type {wire_type} for field {number}", tag_start)
    if pos > end:
        raise WireError(f"field {number} runs past the end of its message", tag_start)
    return Field(number, wire_type, tag_start, field_start, pos, value)


def iter_fields(buf: memoryview | bytes, start: int, end: int) -> Iterator[Field]:
    """Yield every field of the message occupying ``buf[start:end]``, checking each span."""
    pos = start
    while pos < end:
        field = read_field(buf, pos, end)
        pos = field.end
        yield field
