"""Reading photos from untrusted folders: image sizes from headers (checked against what OpenCV
encodes), decompression bombs refused before decoding, and every kind of file that is not a
photo turned into one clear error."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest

from caffe_compat.app.image_files import (
    decode_photo,
    image_size,
    read_photo,
    read_photo_bytes,
)
from caffe_compat.errors import CaffeCompatError
from caffe_compat.predict import read_image

cv2 = pytest.importorskip("cv2")


def _encode(ext: str, image: np.ndarray, *params: int) -> bytes:
    try:
        ok, data = cv2.imencode(ext, image, list(params))
    except cv2.error:
        pytest.skip(f"this OpenCV cannot write {ext}")
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    "ext, params",
    [
        (".png", ()),
        (".jpg", ()),
        (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        (".bmp", ()),
        (".tiff", ()),
        (".webp", ()),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),  # lossless: the VP8L header
        (".ppm", ()),
        (".pam", ()),
        (".ras", ()),
        (".jp2", ()),
        (".hdr", ()),
        (".pfm", ()),
        (".avif", ()),
        (".gif", ()),
    ],
)
def test_header_size_matches_the_encoded_image(ext, params):
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    if ext in (".hdr", ".pfm"):
        image = image.astype(np.float32) / 255
    data = _encode(ext, image, *params)
    assert image_size(data) == (53, 37)


def test_sizes_of_hand_written_headers():
    # big-endian TIFF whose width and length are LONGs; a BMP stored top-down (negative height)
    ifd = struct.pack(">H", 2) + struct.pack(">HHII", 256, 4, 1, 70000)
    ifd += struct.pack(">HHII", 257, 4, 1, 5) + b"\0\0\0\0"
    assert image_size(b"MM\0*" + struct.pack(">I", 8) + ifd) == (70000, 5)
    bmp = b"BM" + b"\0" * 12 + struct.pack("<Iii", 40, 640, -480) + b"\0" * 28
    assert image_size(bmp) == (640, 480)
    assert image_size(b"P6\n# a comment\n 12 34\n255\n") == (12, 34)
    exr = b"v/1\x01\x02\0\0\0" + b"dataWindow\0box2i\0" + struct.pack("<iiiii", 16, 0, 0, 99, 49)
    assert image_size(exr) == (100, 50)
    assert image_size(b"\xff\xd8\xff\xe0\0\x10JFIF") is None  # cut before any frame header
    assert image_size(b"hello") is None


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of width x height black pixels, a few KB on disk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = zlib.compress(b"\0" * (width * 3 + 1) * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _png_bomb(6000, 5000)
    assert len(bomb) < 100_000 and image_size(bomb) == (6000, 5000)
    with pytest.raises(CaffeCompatError, match=r"6000 x 5000 pixels is over the limit of 1000000"):
        decode_photo(bomb, "bomb.png", max_pixels=1_000_000)


def test_decoding_is_read_image(tmp_path, astronaut):
    path = tmp_path / "photo"
    path.write_bytes(_encode(".jpg", astronaut))
    assert np.array_equal(read_photo(str(path)), read_image(path))
    assert read_photo(str(path)).shape == (512, 512, 3)


def test_files_that_are_not_photos(tmp_path, astronaut):
    junk = tmp_path / "notes.jpg"
    junk.write_text("not a photo")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(_encode(".jpg", astronaut)[:3000])
    os.symlink("loop_b", tmp_path / "loop_a")
    os.symlink("loop_a", tmp_path / "loop_b")
    os.symlink("nowhere", tmp_path / "dangling")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    cases = {
        junk: "not an image",
        empty: "empty file",
        broken: "corrupt",
        tmp_path / "loop_a": "symlink loop",
        tmp_path / "dangling": "broken symlink",
        tmp_path / "fifo": "not a photo: a FIFO",  # and no hang: a FIFO is never opened
        tmp_path / "folder": "not a photo: a folder",
        tmp_path / "missing.jpg": "cannot read",
    }
    for path, reason in cases.items():
        with pytest.raises(CaffeCompatError, match=reason) as caught:
            read_photo(str(path))
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_size_limit_in_bytes(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"\xff\xd8\xff" + b"\0" * 2000)
    with pytest.raises(CaffeCompatError, match="2003 bytes is over the limit of 1000"):
        read_photo_bytes(str(path), max_bytes=1000)
    assert len(read_photo_bytes(str(path), max_bytes=2003)) == 2003
