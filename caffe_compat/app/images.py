"""Photos from disk: recognised by their content, decoded by OpenCV as H x W x 3 BGR uint8.

Photo folders hold whatever people put there, so a file is decoded only if it is a regular file
(a FIFO would block the run, a device would never end), at most ``MAX_FILE_BYTES`` long, and its
header gives a size of at most ``MAX_PIXELS`` pixels (read before OpenCV allocates the bitmap:
see ``image_size``). Anything else is a one-line ``CaffeCompatError`` saying why, so a batch
skips that photo and goes on.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np

from ..errors import CaffeCompatError
from .pixel_limit import check_pixels

MAX_FILE_BYTES = 256 << 20  # 256 MiB: far above any camera's JPEG, PNG or TIFF of one photo
MAX_PIXELS = 100_000_000  # 100 megapixels (300 MB as BGR): a 12000 x 8000 photo fits
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}

_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"II+\x00", "TIFF"),
    (0, b"MM\x00+", "TIFF"),
    (8, b"WEBP", "WebP"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"v/1\x01", "OpenEXR"),
    (0, b"#?RADIANCE", "Radiance HDR"),
    (0, b"#?RGBE", "Radiance HDR"),
    (0, b"\x59\xa6\x6a\x95", "Sun raster"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypheic", "HEIF"),
    (4, b"ftypmif1", "HEIF"),
)


def sniff_image(head: bytes) -> str | None:
    """The image format a file's first bytes announce (the kinds OpenCV may decode), or None."""
    for offset, magic, kind in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if kind == "WebP" and head[:4] != b"RIFF":
                continue
            return kind
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"1234567fF" and head[2:3].isspace():
        return "PNM/PFM"
    return None


def opencv_pixel_limit_env(max_pixels: int) -> dict[str, str]:
    """Environment for a fresh process whose cv2 must refuse images above ``max_pixels`` (a
    backstop in worker processes; the header check below comes first)."""
    return {"OPENCV_IO_MAX_IMAGE_PIXELS": str(int(max_pixels))}


def read_photo_bytes(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; opening never blocks (a FIFO, a
    device, a folder or a link loop is refused with its reason), and an empty file is said so."""
    name = str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CaffeCompatError("not a photo: a symlink loop", path=name) from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise CaffeCompatError("not a photo: a broken symlink", path=name) from None
        raise CaffeCompatError(f"cannot read: {exc.strerror or exc}", path=name) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise CaffeCompatError(f"not a photo: {what}, not a regular file", path=name)
        if info.st_size > max_bytes:
            raise CaffeCompatError(
                f"file is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit for a photo",
                path=name,
            )
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 24, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                raise CaffeCompatError(
                    f"file is over the {max_bytes:,}-byte limit for a photo", path=name
                )
    except OSError as exc:
        raise CaffeCompatError(f"cannot read: {exc.strerror or exc}", path=name) from None
    finally:
        os.close(fd)
    if not chunks:
        raise CaffeCompatError("not an image: empty (0 bytes)", path=name)
    return b"".join(chunks)


def read_image(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode a photo as H x W x 3 BGR uint8 (EXIF orientation applied), judging the file by its
    content, not its name; a one-line ``CaffeCompatError`` says why a file is not usable (not a
    regular file, over ``max_bytes``, over ``max_pixels`` by its header, not decodable)."""
    return decode_photo(read_photo_bytes(path, max_bytes), str(path), max_pixels=max_pixels)


_DECODE_FLAGS = {"color": 1, "gray": 0, "native": -1}  # cv2.IMREAD_COLOR, _GRAYSCALE, _UNCHANGED


def decode_photo(
    data: bytes, path: str, *, max_pixels: int = MAX_PIXELS, mode: str = "color"
) -> np.ndarray:
    """The photo in ``data`` (read from ``path``, named in errors) as H x W x 3 BGR uint8, after
    its header's pixel count is checked against ``max_pixels``. ``mode="gray"`` decodes one
    channel (H x W), ``"native"`` keeps the file's own channels (Caffe's encoded Datum)."""
    import cv2

    path = Path(path)
    kind = sniff_image(data[:32])
    if kind is None:
        raise CaffeCompatError("not an image (unknown file content)", path=str(path))
    check_pixels(kind, data, str(path), max_pixels)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _DECODE_FLAGS[mode])
    except (cv2.error, MemoryError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CaffeCompatError(
            f"cannot decode this {kind} image ({reason})", path=str(path)
        ) from None
    if image is None or image.size == 0:
        raise CaffeCompatError(
            f"corrupt or unsupported {kind} image (OpenCV cannot decode it)", path=str(path)
        )
    return image
