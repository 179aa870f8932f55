"""Photos from untrusted folders: read only regular files, refuse decompression bombs.

A run over millions of files meets everything: FIFOs (opening one blocks forever), devices,
symlink loops, zero-byte and truncated files, and small files that decode to gigapixels (a
30 KB PNG can hold 3000 x 3000 zeros). ``read_photo`` checks each one before any allocation
sized by it: the file type and size (``stat``) before reading, the pixel count announced in the
image header before decoding. Every refusal is a ``CaffeCompatError`` naming the file.

The header parsers cover every format ``sniff_image`` recognises. Where a header cannot be
parsed the file is still decoded; ``opencv_pixel_limit_env`` gives worker processes OpenCV's own
limit (``OPENCV_IO_MAX_IMAGE_PIXELS``, read when cv2 loads), which refuses before allocating.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct

import numpy as np

from ..errors import CaffeCompatError
from ..predict import sniff_image

MAX_PIXELS = 100_000_000  # 100 megapixels: 300 MB as BGR, above any camera's ordinary output
MAX_BYTES = 256 * 1024 * 1024
_CHUNK = 1 << 20


def opencv_pixel_limit_env(max_pixels: int) -> dict[str, str]:
    """Environment for a fresh process whose cv2 must refuse images above ``max_pixels``."""
    return {"OPENCV_IO_MAX_IMAGE_PIXELS": str(int(max_pixels))}


def _kind_of_mode(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_photo_bytes(path: str, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; never opens anything else."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CaffeCompatError("symlink loop", path=path) from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise CaffeCompatError("broken symlink", path=path) from None
        raise CaffeCompatError(f"cannot read: {exc.strerror or exc}", path=path) from None
    if not stat.S_ISREG(info.st_mode):
        raise CaffeCompatError(f"not a photo: {_kind_of_mode(info.st_mode)}", path=path)
    if info.st_size == 0:
        raise CaffeCompatError("empty file", path=path)
    if info.st_size > max_bytes:
        raise CaffeCompatError(
            f"file of {info.st_size} bytes is over the limit of {max_bytes}", path=path
        )
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, open must not hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise CaffeCompatError(f"cannot read: {exc.strerror or exc}", path=path) from None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CaffeCompatError(f"not a photo: {_kind_of_mode(info.st_mode)}", path=path)
        chunks, total = [], 0
        while chunk := handle.read(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise CaffeCompatError(f"file grew over the limit of {max_bytes} bytes", path=path)
            chunks.append(chunk)
    if total == 0:
        raise CaffeCompatError("empty file", path=path)
    return b"".join(chunks)


# --------------------------------------------------------------------------------------------
# Image sizes from headers


def _png(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


def _gif(data: bytes) -> tuple[int, int] | None:
    return struct.unpack("<HH", data[6:10]) if len(data) >= 10 else None


def _bmp(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments to the first start-of-frame."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _tiff(data: bytes) -> tuple[int, int] | None:
    """Width and length tags of the first image file directory (the page OpenCV decodes)."""
    order = "<" if data[:2] == b"II" else ">"
    (version,) = struct.unpack(order + "H", data[2:4])
    big = version == 43
    try:
        if big:
            (offset,) = struct.unpack(order + "Q", data[8:16])
            (count,) = struct.unpack(order + "Q", data[offset : offset + 8])
            entry, start = 20, offset + 8
        else:
            (offset,) = struct.unpack(order + "I", data[4:8])
            (count,) = struct.unpack(order + "H", data[offset : offset + 2])
            entry, start = 12, offset + 2
        found: dict[int, int] = {}
        for i in range(min(count, 4096)):
            base = start + i * entry
            tag, kind = struct.unpack(order + "HH", data[base : base + 4])
            if tag not in (256, 257):
                continue
            field = data[base + 12 : base + 20] if big else data[base + 8 : base + 12]
            if kind == 3:  # SHORT
                (value,) = struct.unpack(order + "H", field[:2])
            elif kind == 4:  # LONG
                (value,) = struct.unpack(order + "I", field[:4])
            elif kind == 16 and big:  # LONG8
                (value,) = struct.unpack(order + "Q", field)
            else:
                return None
            found[tag] = value
        if 256 in found and 257 in found:
            return found[256], found[257]
    except struct.error:
        return None
    return None


_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n?)+")


def _pnm(data: bytes) -> tuple[int, int] | None:
    if data[1:2] == b"7":  # PAM: WIDTH and HEIGHT lines
        head = data[:4096].split(b"ENDHDR")[0]
        width = re.search(rb"WIDTH\s+(\d+)", head)
        height = re.search(rb"HEIGHT\s+(\d+)", head)
        return (int(width[1]), int(height[1])) if width and height else None
    tokens = [t for t in _PNM_TOKEN.split(data[2:256]) if t][:2]
    if len(tokens) < 2 or not all(t.isdigit() for t in tokens):
        return None
    return int(tokens[0]), int(tokens[1])


def _sun(data: bytes) -> tuple[int, int] | None:
    return struct.unpack(">II", data[4:12]) if len(data) >= 12 else None


def _hdr(data: bytes) -> tuple[int, int] | None:
    match = re.search(rb"\n\n([-+])Y (\d+) ([-+])X (\d+)", data[:65536])
    return (int(match[4]), int(match[2])) if match else None


def _jpeg2000(data: bytes) -> tuple[int, int] | None:
    if data[:4] == b"\xff\x4f\xff\x51":  # bare codestream: SIZ follows SOC
        if len(data) < 28:
            return None
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[8:24])
        return xsiz - xo, ysiz - yo
    at = data.find(b"ihdr", 0, 65536)
    if at < 0 or at + 12 > len(data):
        return None
    height, width = struct.unpack(">II", data[at + 4 : at + 12])
    return width, height


def _exr(data: bytes) -> tuple[int, int] | None:
    at = data.find(b"dataWindow\0box2i\0", 0, 65536)
    if at < 0:
        return None
    start = at + len(b"dataWindow\0box2i\0") + 4
    if start + 16 > len(data):
        return None
    xmin, ymin, xmax, ymax = struct.unpack("<iiii", data[start : start + 16])
    return xmax - xmin + 1, ymax - ymin + 1


def _isobmff(data: bytes) -> tuple[int, int] | None:
    """AVIF/HEIF: the image spatial extents property ('ispe'); the largest one counts."""
    sizes = []
    for match in re.finditer(rb"ispe", data[:65536]):
        start = match.start() + 8  # after the type and the version/flags word
        if start + 8 <= len(data):
            sizes.append(struct.unpack(">II", data[start : start + 8]))
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


_SIZE_READERS = {
    "PNG": _png,
    "GIF": _gif,
    "BMP": _bmp,
    "JPEG": _jpeg,
    "WebP": _webp,
    "TIFF": _tiff,
    "PNM/PFM": _pnm,
    "Sun raster": _sun,
    "Radiance HDR": _hdr,
    "JPEG 2000": _jpeg2000,
    "OpenEXR": _exr,
    "AVIF": _isobmff,
    "HEIF": _isobmff,
}


def image_size(data: bytes, kind: str | None = None) -> tuple[int, int] | None:
    """(width, height) announced by an image's header, or None when it cannot be read."""
    kind = kind or sniff_image(data[:32])
    reader = _SIZE_READERS.get(kind or "")
    if reader is None:
        return None
    try:
        size = reader(data)
    except (struct.error, ValueError, IndexError):
        return None
    if size is None or min(size) < 0:
        return None
    return int(size[0]), int(size[1])


# --------------------------------------------------------------------------------------------
# Decoding


def decode_photo(data: bytes, path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """H x W x 3 BGR uint8 with EXIF orientation applied, decoded exactly as ``read_image``
    does (``cv2.imdecode(..., IMREAD_COLOR)``), after the header's pixel count is checked."""
    import cv2

    kind = sniff_image(data[:32])
    if kind is None:
        raise CaffeCompatError("not an image (unknown file content)", path=path)
    size = image_size(data, kind)
    if size is not None and size[0] * size[1] > max_pixels:
        raise CaffeCompatError(
            f"{kind} image of {size[0]} x {size[1]} pixels is over the limit of {max_pixels} "
            "(a decompression bomb, or raise --max-pixels)",
            path=path,
        )
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        reason = "over OpenCV's pixel limit" if "MAX_IMAGE_PIXELS" in str(exc) else "corrupt"
        raise CaffeCompatError(f"{kind} image {reason} (OpenCV refused it)", path=path) from None
    if image is None or image.size == 0:
        raise CaffeCompatError(
            f"corrupt or unsupported {kind} image (OpenCV cannot decode it)", path=path
        )
    if image.shape[0] * image.shape[1] > max_pixels:
        raise CaffeCompatError(
            f"image of {image.shape[1]} x {image.shape[0]} pixels is over the limit of "
            f"{max_pixels}",
            path=path,
        )
    return image


def read_photo(
    path: str, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """``read_photo_bytes`` then ``decode_photo``."""
    return decode_photo(read_photo_bytes(path, max_bytes), path, max_pixels)
