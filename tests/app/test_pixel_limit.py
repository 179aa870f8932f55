"""The photo pixel limit where pixels are decoded: the header check refuses disguised bombs before
OpenCV sees them, and OpenCV's own limit is in force for a cv2 loaded inside a command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _hostile_images import DISGUISED, png, tiff_duplicate_size

from caffe_compat.app.images import MAX_PIXELS, read_image
from caffe_compat.app.pixel_limit import OPENCV_VARIABLE, check_pixels, opencv_pixel_limit
from caffe_compat.errors import CaffeCompatError


@pytest.fixture
def no_decoding(monkeypatch):
    cv2 = pytest.importorskip("cv2")

    def boom(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called")

    monkeypatch.setattr(cv2, "imdecode", boom)


def test_a_tiff_listing_a_huge_size_then_a_small_one_is_refused_before_decoding(
    tmp_path, no_decoding
):
    path = tmp_path / "small.tiff"
    path.write_bytes(tiff_duplicate_size((20000, 20000), (16, 16), pad=389 << 10))
    assert 389 << 10 < path.stat().st_size < 400 << 10
    with pytest.raises(CaffeCompatError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "TIFF image of 20000 x 20000 = 400,000,000 pixels" in message
    assert f"{MAX_PIXELS:,}-pixel limit" in message


@pytest.mark.parametrize("name", sorted(DISGUISED))
def test_every_disguised_bomb_is_refused_before_decoding(tmp_path, no_decoding, name):
    path = tmp_path / name
    path.write_bytes(DISGUISED[name]((20000, 20000), (16, 16)))
    with pytest.raises(CaffeCompatError, match="20000 x 20000"):
        read_image(path)


def test_check_pixels_words():
    assert check_pixels("PNG", png(40, 30), "a.png", 1200) == (40, 30)
    with pytest.raises(CaffeCompatError, match=r"a\.png: PNG image of 40 x 30 = 1,200 pixels"):
        check_pixels("PNG", png(40, 30), "a.png", 1199)
    with pytest.raises(CaffeCompatError, match="gives no size"):
        check_pixels("PNG", b"\x89PNG\r\n\x1a\n", "a.png", 1200)


def test_the_opencv_variable_is_scoped(monkeypatch):
    monkeypatch.delenv(OPENCV_VARIABLE, raising=False)
    with opencv_pixel_limit(5000):
        assert os.environ[OPENCV_VARIABLE] == "5000"
    assert OPENCV_VARIABLE not in os.environ
    monkeypatch.setenv(OPENCV_VARIABLE, "300")  # a lower limit of the user's is kept
    with opencv_pixel_limit(5000):
        assert os.environ[OPENCV_VARIABLE] == "300"
    assert os.environ[OPENCV_VARIABLE] == "300"
    monkeypatch.setenv(OPENCV_VARIABLE, "9999999999")
    with opencv_pixel_limit(5000):
        assert os.environ[OPENCV_VARIABLE] == "5000"
    assert os.environ[OPENCV_VARIABLE] == "9999999999"


_CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from _hostile_images import png
from caffe_compat.app.pixel_limit import opencv_pixel_limit
with opencv_pixel_limit(1000) as effective:
    import cv2
    import numpy as np
assert effective and "OPENCV_IO_MAX_IMAGE_PIXELS" not in os.environ
try:
    cv2.imdecode(np.frombuffer(png(100, 100), np.uint8), cv2.IMREAD_COLOR)
except cv2.error as exc:
    print("refused" if "CV_IO_MAX_IMAGE_PIXELS" in str(exc) else "other error")
else:
    print("decoded")
"""


def test_opencv_loaded_inside_the_scope_refuses_by_itself():
    """OpenCV 4 and 5 read the variable when cv2 is loaded: a cv2 first imported inside the
    scope refuses a 100 x 100 image under a 1000-pixel limit, with no header check of ours."""
    pytest.importorskip("cv2")
    env = {k: v for k, v in os.environ.items() if k != OPENCV_VARIABLE}
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, tests],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "refused"


def test_commands_run_with_the_opencv_limit(tmp_path, monkeypatch):
    """The CLI sets the variable for the length of every command (a cv2 first loaded by the
    command honours it), and restores it after."""
    from caffe_compat.cli import inspect as inspect_command
    from caffe_compat.cli.main import main

    monkeypatch.delenv(OPENCV_VARIABLE, raising=False)
    seen = []
    monkeypatch.setattr(
        inspect_command, "run", lambda args: seen.append(os.environ.get(OPENCV_VARIABLE)) or 0
    )
    assert main(["inspect", str(tmp_path / "net.prototxt")]) == 0
    assert seen == [str(MAX_PIXELS)]
    assert OPENCV_VARIABLE not in os.environ
