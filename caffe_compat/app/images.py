"""Photos from disk: recognised by their content, decoded by OpenCV as H x W x 3 BGR uint8."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CaffeCompatError

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


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a photo as H x W x 3 BGR uint8 (EXIF orientation applied), judging the file by its
    content, not its name; a one-line ``CaffeCompatError`` says why a file is not usable."""
    import cv2

    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(32)
            if not head:
                raise CaffeCompatError("not an image: empty (0 bytes)", path=str(path))
            kind = sniff_image(head)
            if kind is None:
                raise CaffeCompatError("not an image (unknown file content)", path=str(path))
            data = np.frombuffer(head + handle.read(), dtype=np.uint8)
    except OSError as exc:
        raise CaffeCompatError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise CaffeCompatError(
            f"corrupt or unsupported {kind} image (OpenCV cannot decode it)", path=str(path)
        )
    return image
