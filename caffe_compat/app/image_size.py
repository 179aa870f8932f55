"""An image's width and height from its header, before any decoding.

OpenCV has no cheap header read: ``cv2.imdecode`` allocates the whole bitmap first, so a 2.6 MB
PNG that says 30000 x 30000 becomes 2.7 GB of pixels. These parsers read only the few header
fields that give the size (every offset bounds-checked against the bytes at hand; anything odd
gives ``None``, which the caller treats as unreadable), so the pixel count can be refused before
OpenCV sees the file. The formats are those OpenCV decodes: JPEG, PNG, GIF, BMP, WebP, TIFF
(classic and BigTIFF), PNM/PAM/PFM, Sun raster, JPEG 2000 (codestream or JP2) and Radiance HDR.
For OpenEXR, AVIF and HEIF (nested ISO boxes, rarely photos of faces) no size is read, so they
are not accepted.
"""

from __future__ import annotations

import struct

Size = tuple[int, int]  # width, height

# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = {m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: no length field
_PNM_HEADER = 1024


def _unpack(fmt: str, data: bytes, offset: int) -> tuple[int, ...] | None:
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        return None
    return struct.unpack_from(fmt, data, offset)


def _png(data: bytes) -> Size | None:
    if data[12:16] != b"IHDR":
        return None
    found = _unpack(">II", data, 16)
    return (found[0], found[1]) if found else None


def _gif(data: bytes) -> Size | None:
    """The logical screen, grown to the first frame if that frame reaches beyond it."""
    screen = _unpack("<HHB", data, 6)
    if screen is None:
        return None
    width, height, flags = screen
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < len(data):
        block = data[pos]
        if block == 0x2C:  # image descriptor
            frame = _unpack("<HHHH", data, pos + 1)
            if frame:
                left, top, w, h = frame
                width, height = max(width, left + w), max(height, top + h)
            break
        if block != 0x21:  # not an extension: trailer or damage
            break
        pos += 2
        while pos < len(data) and data[pos]:  # sub-blocks
            pos += data[pos] + 1
        pos += 1
    return width, height


def _bmp(data: bytes) -> Size | None:
    header = _unpack("<I", data, 14)
    if header is None:
        return None
    # A 12-byte OS/2 BITMAPCOREHEADER has 16-bit sizes; later headers 32-bit signed ones.
    found = _unpack("<HH" if header[0] == 12 else "<ii", data, 18)
    return (abs(found[0]), abs(found[1])) if found else None  # negative height: top-down


def _webp(data: bytes) -> Size | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        found = _unpack("<HH", data, 26)
        return (found[0] & 0x3FFF, found[1] & 0x3FFF) if found else None
    if chunk == b"VP8L":
        found = _unpack("<BI", data, 20)
        if not found or found[0] != 0x2F:
            return None
        bits = found[1]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        if len(data) < 30:
            return None
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _jpeg(data: bytes) -> Size | None:
    pos = 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI, or scan data before any frame
            return None
        length = _unpack(">H", data, pos + 2)
        if length is None or length[0] < 2:
            return None
        if marker in _SOF:
            found = _unpack(">HH", data, pos + 5)
            return (found[1], found[0]) if found else None
        pos += 2 + length[0]
    return None


def _tiff(data: bytes) -> Size | None:
    """ImageWidth (256) and ImageLength (257) of the first directory, the page OpenCV reads."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        return None
    (magic,) = _unpack(order + "H", data, 2) or (0,)
    if magic == 42:
        first = _unpack(order + "I", data, 4)
        count_fmt, entry_size, value_at, offset_size = "H", 12, 8, 4
    elif magic == 43:
        first = _unpack(order + "Q", data, 8)
        count_fmt, entry_size, value_at, offset_size = "Q", 20, 12, 8
    else:
        return None
    if first is None:
        return None
    ifd = first[0]
    count = _unpack(order + count_fmt, data, ifd)
    if count is None:
        return None
    start = ifd + struct.calcsize(count_fmt)
    found: dict[int, int] = {}
    for index in range(min(count[0], 4096)):
        entry = start + index * entry_size
        head = _unpack(order + "HH", data, entry)
        if head is None:
            return None
        tag, kind = head
        if tag not in (256, 257):
            continue
        fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
        if fmt is None or struct.calcsize(fmt) > offset_size:
            return None
        value = _unpack(order + fmt, data, entry + value_at)
        if value is None:
            return None
        found[tag] = value[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _pnm(data: bytes) -> Size | None:
    """P1-P6 and PF/Pf: magic, width, height as text (comments allowed); P7 (PAM): keywords."""
    head = data[:_PNM_HEADER]
    if head[:2] == b"P7":
        fields: dict[bytes, int] = {}
        for line in head.split(b"\n")[1:]:
            words = line.split()
            if words[:1] == [b"ENDHDR"]:
                break
            if len(words) == 2 and words[0] in (b"WIDTH", b"HEIGHT") and words[1].isdigit():
                fields[words[0]] = int(words[1])
        if b"WIDTH" in fields and b"HEIGHT" in fields:
            return fields[b"WIDTH"], fields[b"HEIGHT"]
        return None
    tokens: list[bytes] = []
    text = b"\n".join(line.split(b"#", 1)[0] for line in head[2:].split(b"\n"))
    for token in text.split():
        if not token.isdigit():
            return None
        tokens.append(token)
        if len(tokens) == 2:
            return int(tokens[0]), int(tokens[1])
    return None


def _j2k(data: bytes, start: int = 0) -> Size | None:
    """The SIZ segment that opens a JPEG 2000 codestream: image extent minus its offset."""
    if data[start : start + 4] != b"\xff\x4f\xff\x51":
        return None
    found = _unpack(">IIII", data, start + 8)
    if found is None or found[0] < found[2] or found[1] < found[3]:
        return None
    return found[0] - found[2], found[1] - found[3]


def _jpeg2000(data: bytes) -> Size | None:
    """A bare codestream, or a JP2 file: top-level boxes up to the codestream box."""
    if data[:2] == b"\xff\x4f":
        return _j2k(data)
    pos = 0
    for _ in range(64):
        head = _unpack(">I4s", data, pos)
        if head is None:
            return None
        length, box = head
        body = pos + 8
        if length == 1:  # 64-bit length after the type
            wide = _unpack(">Q", data, body)
            if wide is None:
                return None
            length, body = wide[0], body + 8
        if box == b"jp2c":
            return _j2k(data, body)
        if length == 0 or length < body - pos:  # to the end of the file, or damaged
            return None
        pos += length
    return None


def _radiance(data: bytes) -> Size | None:
    """Header lines, a blank line, then the resolution: "-Y rows +X columns" (or rotated)."""
    end = data.find(b"\n\n", 0, 65536)
    if end < 0:
        return None
    line = data[end + 2 : end + 66].split(b"\n", 1)[0].split()
    if len(line) != 4 or not line[1].isdigit() or not line[3].isdigit():
        return None
    axes = {line[0][-1:]: int(line[1]), line[2][-1:]: int(line[3])}
    if set(axes) != {b"X", b"Y"}:
        return None
    return axes[b"X"], axes[b"Y"]


def _sun(data: bytes) -> Size | None:
    found = _unpack(">II", data, 4)
    return (found[0], found[1]) if found else None


_PARSERS = {
    "PNG": _png,
    "GIF": _gif,
    "BMP": _bmp,
    "WebP": _webp,
    "JPEG": _jpeg,
    "TIFF": _tiff,
    "PNM/PFM": _pnm,
    "Sun raster": _sun,
    "JPEG 2000": _jpeg2000,
    "Radiance HDR": _radiance,
}


def image_size(kind: str, data: bytes) -> Size | None:
    """(width, height) from the header of an image of ``kind`` (as ``sniff_image`` names it);
    None when the format is not one read here or the header does not give a size."""
    parser = _PARSERS.get(kind)
    if parser is None:
        return None
    try:
        return parser(data)
    except (struct.error, IndexError, ValueError):  # defensive: every read is bounds-checked
        return None
