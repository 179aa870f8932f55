"""Protobuf wire bytes written by hand, for tests that build files protobuf itself would refuse
to write (wrong declared sizes, truncations) or that check our scanner against the encoding."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """Base-128 varint, least significant group first."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes, *, declared: int | None = None) -> bytes:
    """A length-delimited field; ``declared`` overrides the length written before the payload."""
    size = len(payload) if declared is None else declared
    return varint(number << 3 | 2) + varint(size) + payload
