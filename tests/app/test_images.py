"""Photos people put in folders: FIFOs, huge files, pixel bombs and link loops are refused with a
reason, before anything blocks or a bitmap is allocated; image sizes are read from headers."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest

from caffe_compat.app import images
from caffe_compat.app.image_size import image_size
from caffe_compat.app.images import read_image, sniff_image
from caffe_compat.errors import CaffeCompatError

cv2 = pytest.importorskip("cv2")

# Every format OpenCV writes here that read_image accepts; the encoder fixes the true size.
FORMATS = [".jpg", ".png", ".bmp", ".webp", ".tiff", ".ppm", ".pam", ".pgm", ".sr", ".gif", ".jp2"]


def photo(height=37, width=53, channels=3) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, 255, shape, dtype=np.uint8)


def encoded(ext: str, image: np.ndarray | None = None, params=()) -> bytes:
    if image is None:
        image = photo(channels=1) if ext == ".pgm" else photo()
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def refused(path, *words: str) -> str:
    with pytest.raises(CaffeCompatError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if OpenCV is asked to decode anything."""

    def boom(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called")

    monkeypatch.setattr(cv2, "imdecode", boom)


# --------------------------------------------------------------------------------------------
# Header sizes against OpenCV's own decoding


@pytest.mark.parametrize("ext", FORMATS)
def test_header_sizes_match_what_opencv_decodes(ext):
    data = encoded(ext)
    kind = sniff_image(data[:32])
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image_size(kind, data) == (decoded.shape[1], decoded.shape[0])


@pytest.mark.parametrize(
    "ext, params",
    [
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),  # lossless: the VP8L header
        (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),  # SOF2
        (".hdr", ()),
        (".pfm", ()),
    ],
)
def test_header_variants(ext, params):
    image = photo().astype(np.float32) / 255 if ext in (".hdr", ".pfm") else photo()
    data = encoded(ext, image, params)
    assert image_size(sniff_image(data[:32]), data) == (53, 37)


def test_exif_segments_before_the_frame_are_skipped():
    data = encoded(".jpg")
    app1 = b"\xff\xe1" + struct.pack(">H", 60002) + b"Exif\0\0" + bytes(59994)
    assert image_size("JPEG", data[:2] + app1 * 3 + data[2:]) == (53, 37)


@pytest.mark.parametrize("ext", FORMATS)
def test_damaged_headers_never_raise(ext):
    """Every prefix and a few corrupted copies give a size or None, never an exception."""
    data = encoded(ext)
    kind = sniff_image(data[:32])
    rng = np.random.default_rng(1)
    for cut in range(0, min(len(data), 700), 3):
        assert image_size(kind, data[:cut]) in (None, (53, 37))
    for _ in range(200):
        junk = np.frombuffer(data[:2000], np.uint8).copy()
        junk[rng.integers(4, len(junk), 8)] = rng.integers(0, 256, 8)
        size = image_size(kind, junk.tobytes())
        assert size is None or all(isinstance(v, int) and v >= 0 for v in size)


def test_unreadable_formats_give_no_size():
    assert image_size("OpenEXR", b"v/1\x01" + bytes(100)) is None
    assert image_size("AVIF", bytes(4) + b"ftypavif" + bytes(100)) is None


# --------------------------------------------------------------------------------------------
# Hostile files


def png_claiming(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header says ``width`` x ``height``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(bytes(1 + 3 * min(width, 4096)) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def vp8l_bits(data: bytes) -> int:
    """The lossless WebP header word, its 14-bit width-1 and height-1 fields cleared."""
    assert data[12:16] == b"VP8L"
    return struct.unpack_from("<I", data, 21)[0] & ~0x0FFFFFFF


def test_a_pixel_bomb_png_is_refused_before_decoding(tmp_path, no_decoding):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(30000, 30000))
    refused(path, "PNG image of 30000 x 30000 = 900,000,000 pixels", "100,000,000-pixel limit")


@pytest.mark.parametrize(
    "ext, patch",
    [
        (".jpg", lambda d: d.replace(b"\x00\x25\x00\x35", b"\xff\xf0\xff\xf0", 1)),  # SOF 37x53
        (".bmp", lambda d: d[:18] + struct.pack("<ii", 40000, -40000) + d[26:]),
        (".gif", lambda d: d[:6] + struct.pack("<HH", 65535, 65535) + d[10:]),
        (".webp", lambda d: d[:21] + struct.pack("<I", vp8l_bits(d) | 0x0FFFFFFF) + d[25:]),
    ],
)
def test_huge_sizes_in_other_headers_are_refused(tmp_path, no_decoding, ext, patch):
    data = patch(encoded(ext))
    assert image_size(sniff_image(data[:32]), data) != (53, 37)
    path = tmp_path / f"bomb{ext}"
    path.write_bytes(data)
    refused(path, "pixel limit")


def test_the_limits_are_parameters(tmp_path):
    path = tmp_path / "small.png"
    path.write_bytes(encoded(".png"))
    assert read_image(path).shape == (37, 53, 3)
    with pytest.raises(CaffeCompatError, match="pixel limit"):
        read_image(path, max_pixels=1000)
    with pytest.raises(CaffeCompatError, match="byte limit"):
        read_image(path, max_bytes=100)


def test_a_huge_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:
        handle.write(b"\xff\xd8\xff\xe0")
        handle.truncate(6 << 30)  # 6 GiB, sparse: nothing is stored
    reads = []
    real = os.read
    monkeypatch.setattr(images.os, "read", lambda fd, n: reads.append(n) or real(fd, n))
    refused(path, f"{6 << 30:,} bytes", "byte limit")
    assert reads == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "photo.jpg"
    os.mkfifo(path)
    refused(path, "a FIFO, not a regular file")


def test_links_loops_and_folders(tmp_path):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    refused(loop, "symlink loop")
    refused(tmp_path, "a directory")
    real = tmp_path / "real.png"
    real.write_bytes(encoded(".png"))
    link = tmp_path / "link.png"
    link.symlink_to(real)
    assert read_image(link).shape == (37, 53, 3)  # a link to a photo is a photo


def test_formats_without_a_readable_size_are_refused(tmp_path):
    path = tmp_path / "x.exr"
    path.write_bytes(b"v/1\x01" + bytes(200))
    refused(path, "OpenEXR", "gives no size")
