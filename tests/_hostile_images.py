"""Image files whose headers say one size to a careless reader and another to the decoder.

Each builder takes the size the decoder allocates (``real``) and a smaller decoy; the bytes are
built by hand, so the tests need no encoder. Used by tests/app and the fuzz harness.
"""

from __future__ import annotations

import struct
import zlib

Size = tuple[int, int]

SHORT, LONG = 3, 4


def tiff(pages: list[list[tuple[int, int, int]]], *, order: str = "<", pad: int = 0) -> bytes:
    """A classic TIFF whose directories hold ``(tag, type, value)`` entries in the given order
    (duplicates kept), linked one after the other; ``pad`` zero bytes of "strip data" follow."""
    head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    body = b""
    offset = 8
    for index, entries in enumerate(pages):
        size = 2 + 12 * len(entries) + 4
        following = offset + size if index + 1 < len(pages) else 0
        ifd = struct.pack(order + "H", len(entries))
        for tag, kind, value in entries:
            packed = (
                struct.pack(order + "HH", value, 0)
                if kind == SHORT
                else struct.pack(order + "I", value)
            )
            ifd += struct.pack(order + "HHI", tag, kind, 1) + packed
        body += ifd + struct.pack(order + "I", following)
        offset += size
    return head + body + bytes(pad)


def gray_page(width: int, height: int) -> list[tuple[int, int, int]]:
    """The entries of a plain 8-bit grey, uncompressed page (strip data not included)."""
    return [
        (256, LONG, width),
        (257, LONG, height),
        (258, SHORT, 8),
        (259, SHORT, 1),
        (262, SHORT, 1),
        (273, LONG, 0),
        (277, SHORT, 1),
        (278, LONG, height),
        (279, LONG, width * height),
    ]


def tiff_duplicate_size(real: Size, decoy: Size, *, pad: int = 0) -> bytes:
    """ImageWidth/ImageLength twice: ``real`` first (libtiff keeps the first), ``decoy`` last."""
    page = gray_page(*real)
    page[2:2] = [(256, SHORT, decoy[0]), (257, SHORT, decoy[1])]
    return tiff([page], pad=pad)


def tiff_second_page(first: Size, second: Size) -> bytes:
    return tiff([gray_page(*first), gray_page(*second)])


def pnm_carriage_return_comment(real: Size, decoy: Size) -> bytes:
    """A comment ended by a carriage return: OpenCV reads on after it, a line-based reader
    skips the whole line (and the real size in it)."""
    return b"P6\n# c\r%d %d\n%d %d\n255\n" % (*real, *decoy) + bytes(16)


def hdr_split_line(real: Size, decoy: Size) -> bytes:
    """A 127-byte header line: OpenCV's 128-byte ``fgets`` returns its line feed as a blank
    line of its own, which ends the header, and reads the next line as the size."""
    return (
        b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n"
        + b"A" * 127
        + b"\n-Y %d +X %d\n" % (real[1], real[0])
        + b"\n-Y %d +X %d\n" % (decoy[1], decoy[0])
        + bytes(64)
    )


def pam_carriage_returns(real: Size) -> bytes:
    return b"P7\rWIDTH %d\rHEIGHT %d\rDEPTH 3\rMAXVAL 255\rENDHDR\r" % real + bytes(16)


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))


# Files the decoder reads as ``real`` while a naive header reader sees ``decoy`` (or nothing).
DISGUISED = {
    "tiff-duplicate-tags": lambda real, decoy: tiff_duplicate_size(real, decoy),
    "pnm-carriage-return-comment": pnm_carriage_return_comment,
    "hdr-split-line": hdr_split_line,
    "pam-carriage-returns": lambda real, decoy: pam_carriage_returns(real),
}
