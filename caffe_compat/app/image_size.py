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

import re
import struct

Size = tuple[int, int]  # width, height

# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = {m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: no length field


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


# TIFF field types libtiff accepts for ImageWidth/ImageLength (TIFFReadDirEntryLong): BYTE,
# SHORT, LONG, LONG8 and their signed forms (negative values are refused there too).
_TIFF_INTS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q"}
_TIFF_MAX_PAGES = 1024


def _tiff_page(data: bytes, order: str, ifd: int, big: bool) -> tuple[Size | None, int]:
    """One directory's (width, height), None if it gives none, and the next directory's
    offset (0 at the end). As libtiff, the FIRST entry of a tag counts and later duplicates are
    ignored (tif_dirread.c marks them), so a second, smaller ImageWidth cannot hide the size
    the decoder allocates."""
    count_fmt, entry_size, value_at, room = ("Q", 20, 12, 8) if big else ("H", 12, 8, 4)
    count = _unpack(order + count_fmt, data, ifd)
    if count is None or count[0] == 0:
        return None, 0
    start = ifd + struct.calcsize(count_fmt)
    found: dict[int, int] = {}
    for index in range(min(count[0], 4096)):
        entry = start + index * entry_size
        head = _unpack(order + ("HHQ" if big else "HHI"), data, entry)
        if head is None:
            return None, 0
        tag, kind, number = head
        if tag not in (256, 257) or tag in found:
            continue
        fmt = _TIFF_INTS.get(kind)
        if fmt is None or number != 1 or struct.calcsize(fmt) > room:
            return None, 0  # libtiff refuses the directory: so do we
        value = _unpack(order + fmt, data, entry + value_at)
        if value is None or value[0] < 0:
            return None, 0
        found[tag] = value[0]
    following = _unpack(order + ("Q" if big else "I"), data, start + count[0] * entry_size)
    size = (found[256], found[257]) if 256 in found and 257 in found else None
    return size, following[0] if following else 0


def _tiff(data: bytes) -> Size | None:
    """The largest page: ImageWidth (256) and ImageLength (257) of every directory.

    OpenCV decodes the first page and ``imreadmulti`` every one, so each is checked; the first
    must give a size, later damaged or looping directories end the walk."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        return None
    (magic,) = _unpack(order + "H", data, 2) or (0,)
    if magic not in (42, 43):
        return None
    big = magic == 43
    first = _unpack(order + ("Q" if big else "I"), data, 8 if big else 4)
    if first is None:
        return None
    largest: Size | None = None
    ifd, seen = first[0], set()
    while ifd and ifd not in seen and len(seen) < _TIFF_MAX_PAGES:
        seen.add(ifd)
        size, ifd = _tiff_page(data, order, ifd, big)
        if size is None:
            break
        if largest is None or size[0] * size[1] > largest[0] * largest[1]:
            largest = size
    return largest


_SPACE = frozenset(b" \t\n\v\f\r")  # C isspace()
_DIGITS = frozenset(b"0123456789")


def _pnm_numbers(data: bytes, pos: int, wanted: int) -> list[int] | None:
    """OpenCV's ``ReadNumber`` (grfmt_pxm.cpp) ``wanted`` times: whitespace and ``#`` comments
    (ended by a line feed OR a carriage return) before each number, and the byte after its
    digits consumed whatever it is."""
    numbers: list[int] = []
    while len(numbers) < wanted:
        while pos < len(data) and data[pos] not in _DIGITS:
            if data[pos] == 0x23:  # '#'
                ends = [i for i in (data.find(b"\n", pos), data.find(b"\r", pos)) if i >= 0]
                if not ends:
                    return None
                pos = min(ends) + 1
            elif data[pos] in _SPACE:
                pos += 1
            else:
                return None  # OpenCV: "Unexpected code in ReadNumber()"
        start = pos
        while pos < len(data) and data[pos] in _DIGITS and pos - start <= 10:
            pos += 1
        if pos == start or pos - start > 10:
            return None
        numbers.append(int(data[start:pos]))
        pos += 1
    return numbers


def _pam(data: bytes) -> Size | None:
    """P7: header lines (ended by a line feed or a carriage return) up to ENDHDR; OpenCV
    refuses a repeated WIDTH or HEIGHT, so a size is given only when each appears once."""
    fields: dict[bytes, list[bytes]] = {}
    for line in data[3:65536].replace(b"\r", b"\n").split(b"\n"):
        words = line.split()
        if words[:1] == [b"ENDHDR"]:
            width, height = fields.get(b"WIDTH", []), fields.get(b"HEIGHT", [])
            if len(width) != 1 or len(height) != 1:
                return None
            if not (width[0].isdigit() and height[0].isdigit()):
                return None
            return int(width[0]), int(height[0])
        if len(words) >= 2 and words[0] in (b"WIDTH", b"HEIGHT"):
            fields.setdefault(words[0], []).append(b"".join(words[1:]))
    return None


def _pfm(data: bytes) -> Size | None:
    """PF/Pf, a line feed, then width and height as OpenCV's ``read_number`` reads them: the
    bytes up to the next whitespace byte, through ``atoi`` (leading digits, optional sign)."""
    if data[2:3] != b"\n":
        return None
    values, pos = [], 3
    for _ in range(2):
        end = pos
        while end < len(data) and data[end] not in _SPACE and end - pos < 2048:
            end += 1
        token = data[pos:end]
        digits = token[1:] if token[:1] in (b"+", b"-") else token
        count = next((i for i, c in enumerate(digits) if c not in _DIGITS), len(digits))
        if count == 0 or count > 10 or token[:1] == b"-":
            return None
        values.append(int(digits[:count]))
        pos = end + 1
    return values[0], values[1]


def _pnm(data: bytes) -> Size | None:
    """P1-P6 (OpenCV's PxM reader), P7 (PAM) and PF/Pf (PFM), each as its OpenCV decoder reads
    the header."""
    if data[:2] == b"P7":
        return _pam(data)
    if data[1:2] in (b"F", b"f"):
        return _pfm(data)
    numbers = _pnm_numbers(data, 2, 2)
    return (numbers[0], numbers[1]) if numbers else None


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


def _fgets(data: bytes, pos: int, size: int = 128) -> tuple[bytes, int]:
    """C's ``fgets(buf, size)``: up to ``size - 1`` bytes, through the first line feed."""
    end = data.find(b"\n", pos, pos + size - 1)
    stop = end + 1 if end >= 0 else min(pos + size - 1, len(data))
    return data[pos:stop], stop


# sscanf(buf, "-Y %d +X %d"): literal "-Y", then whitespace-skipping integers.
_HDR_SIZE = re.compile(rb"-Y[ \t\n\v\f\r]*([+-]?\d+)[ \t\n\v\f\r]*\+X[ \t\n\v\f\r]*([+-]?\d+)")


def _radiance(data: bytes) -> Size | None:
    """OpenCV's ``RGBE_ReadHeader``: lines read by ``fgets`` into 128 bytes (so a long line
    comes in pieces, and a piece starting with a line feed ends the header), a FORMAT line
    required, then "-Y rows +X columns"."""
    _, pos = _fgets(data, 0)
    has_format = False
    while pos < min(len(data), 65536):
        line, pos = _fgets(data, pos)
        if line[:1] == b"\n":
            break
        has_format = has_format or line == b"FORMAT=32-bit_rle_rgbe\n"
    else:
        return None
    if not has_format:
        return None
    line, _ = _fgets(data, pos)
    found = _HDR_SIZE.match(line)
    if not found:
        return None
    height, width = int(found.group(1)), int(found.group(2))
    return (width, height) if width > 0 and height > 0 else None


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
