"""Say what a file really is before parsing it, so errors name the likely cause.

A Git LFS pointer, a saved HTML error page, a zip archive or a prototxt passed where weights belong
all fail deep inside a protobuf parser with a useless message; here they get a one-line diagnosis.
"""

from __future__ import annotations

import re
from enum import Enum

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class Kind(str, Enum):
    EMPTY = "empty"
    LFS_POINTER = "git-lfs-pointer"
    HTML = "html"
    HDF5 = "hdf5"
    ZIP = "zip"
    GZIP = "gzip"
    TEXT = "text"
    BINARY = "binary"


_TEXT_BYTES = bytes(range(32, 127)) + b"\t\n\r\f\b"
_NOT_CONTROL = _TEXT_BYTES + bytes(range(128, 256))  # deleting these leaves the control bytes


def sniff(head: bytes) -> Kind:
    """Classify a file from its first bytes (a few KiB are enough)."""
    if not head:
        return Kind.EMPTY
    if head.startswith(b"version https://git-lfs"):
        return Kind.LFS_POINTER
    if head.startswith(HDF5_MAGIC) or (len(head) < len(HDF5_MAGIC) and HDF5_MAGIC.startswith(head)):
        return Kind.HDF5  # a cut-off signature still says HDF5; the reader reports the truncation
    if head.startswith(b"PK\x03\x04"):
        return Kind.ZIP
    if head.startswith(b"\x1f\x8b"):
        return Kind.GZIP
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return Kind.HTML
    sample = head[:4096]
    # Control bytes decide: protobuf tags, lengths and float data are full of them, while text in
    # any 8-bit encoding (UTF-8, Latin-1, GBK) has none; bad UTF-8 alone is a text problem.
    control = len(sample.translate(None, _NOT_CONTROL))
    if b"\x00" in sample or control > len(sample) // 100:
        return Kind.BINARY
    if control:
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(sample) - 4:  # a multi-byte char cut by the sample end is fine
                return Kind.BINARY
    return Kind.TEXT


def explain(kind: Kind, head: bytes, expected: str) -> str | None:
    """A one-line diagnosis when ``kind`` cannot be the ``expected`` file, else None."""
    if kind is Kind.EMPTY:
        return "file is empty (0 bytes)"
    if kind is Kind.LFS_POINTER:
        size = re.search(rb"size (\d+)", head)
        real = f" of {int(size.group(1))} bytes" if size else ""
        return (
            f"this is a Git LFS pointer, not the {expected}: the real file{real} was never "
            "downloaded (run `git lfs pull`, or download the file itself)"
        )
    if kind is Kind.HTML:
        return (
            f"this is an HTML page, not the {expected}: the download saved an error or "
            "login page; download the file again"
        )
    if kind is Kind.ZIP:
        return f"this is a zip archive, not the {expected}: extract it first"
    if kind is Kind.GZIP:
        return f"this is gzip-compressed, not the {expected}: decompress it first"
    return None
