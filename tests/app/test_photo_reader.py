"""Every photo goes through one reader (``app.images.read_image`` and its limits) and one
preprocessing path: no other module decodes photos with OpenCV; ``evaluate``, ``verify --input``
and both ``predict`` engines read through it; verify's images become inputs the way
``cv2.dnn.blobFromImage`` makes them (OpenCV itself is the reference here)."""

from __future__ import annotations

import ast
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from _album import onnx_options

from caffe_compat.app.evaluate import evaluate_adience
from caffe_compat.app.preprocess import blob_from_image
from caffe_compat.app.settings import AppSettings
from caffe_compat.cli.main import main
from caffe_compat.cli.verify import _feeds
from caffe_compat.errors import CaffeCompatError

cv2 = pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_FOLDERS = [ROOT / "caffe_compat", ROOT / "converters", ROOT / "zoo"]
READER = ROOT / "caffe_compat" / "app" / "images.py"
DECODERS = {"imread", "imdecode", "imreadmulti", "imdecodemulti", "imreadanimation", "imcount"}


def _opencv_decodes(path: Path) -> list[str]:
    """``cv2.<decoder>`` uses in a module (whatever name cv2 is imported as)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {"cv2"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name for a in node.names if a.name == "cv2"}
        elif isinstance(node, ast.ImportFrom) and node.module == "cv2":
            found += [f"from cv2 import {a.name}" for a in node.names if a.name in DECODERS]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in DECODERS
            and isinstance(node.value, ast.Name)
            and node.value.id in names
        ):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_but_the_reader_decodes_photos_with_opencv():
    offenders = {}
    for folder in PACKAGE_FOLDERS:
        for path in folder.rglob("*.py"):
            if path != READER and (uses := _opencv_decodes(path)):
                offenders[str(path.relative_to(ROOT))] = uses
    assert not offenders, f"photos decoded outside app/images.py: {offenders}"
    assert _opencv_decodes(READER), "the reader itself decodes with OpenCV"  # the scan works


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header says ``width`` x ``height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(bytes(1 + 3 * 64) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def photo(height: int = 45, width: int = 61) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# verify --input


@pytest.mark.parametrize("size", [(20, 30), (61, 45), (227, 227)])
@pytest.mark.parametrize("mean", [(0.0, 0.0, 0.0), (104.0, 117.0, 123.0), (78.43, 87.77, 114.9)])
def test_blob_from_image_is_opencvs(size, mean):
    image = photo()
    height, width = size
    ours = blob_from_image(image, height, width, mean)
    theirs = cv2.dnn.blobFromImage(image, 1.0, (width, height), mean, swapRB=False)
    assert ours.shape == theirs.shape == (1, 3, height, width) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_verify_images_are_read_with_the_limits_and_become_blobs(tmp_path):
    path = tmp_path / "face.png"
    image = photo()
    cv2.imwrite(str(path), image)
    shapes = {"data": [1, 3, 24, 32]}
    mean = (104.0, 117.0, 123.0)
    feeds = _feeds([str(path), str(path)], shapes, mean)
    expected = cv2.dnn.blobFromImage(image, 1.0, (32, 24), mean, swapRB=False)
    assert feeds["data"].shape == (2, 3, 24, 32)
    np.testing.assert_allclose(feeds["data"], np.concatenate([expected] * 2), rtol=0, atol=1e-5)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(30000, 30000))
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    for bad, words in ((bomb, "100,000,000-pixel limit"), (notes, "not an image")):
        with pytest.raises(CaffeCompatError, match=words) as caught:
            _feeds([str(bad)], shapes, mean)
        assert caught.value.path == str(bad) and "\n" not in str(caught.value)
    with pytest.raises(CaffeCompatError, match="N x C x H x W"):
        _feeds([str(path)], {"data": [1, 10]}, mean)


# --------------------------------------------------------------------------------------------
# evaluate


HEADER = (
    "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
    "fiducial_yaw_angle\tfiducial_score"
)


class Everyone25:
    """A stand-in predictor: every face is in the (25, 32) group (class 4)."""

    batch = 4

    def __init__(self) -> None:
        self.labels = {"age": ("a", "b", "c", "d", "e", "f", "g", "h")}

    def classify(self, images, crop):
        return {"age": np.eye(8, dtype=np.float32)[[4] * len(images)]}


def test_evaluate_reads_faces_under_the_settings_limits(tmp_path):
    folds, faces = tmp_path / "folds", tmp_path / "faces"
    folds.mkdir()
    rows = [HEADER]
    sizes = {"small.png": (40, 40), "large.png": (60, 80), "other.png": (40, 40)}
    for n, (name, (height, width)) in enumerate(sizes.items()):
        rows.append(f"u\t{name}\t{n}\t(25, 32)\tm\t1\t2\t3\t4\t0\t0\t50")
        target = faces / "u" / f"landmark_aligned_face.{n}.{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), photo(height, width))
    (folds / "fold_0_data.txt").write_text("\n".join(rows) + "\n")
    args = {"task": "age", "crops": ("center",), "predictor": Everyone25()}
    everything = evaluate_adience(folds, faces, **args)
    assert (everything.modes["center"].folds[0].faces, everything.unreadable) == (3, 0)
    limited = evaluate_adience(folds, faces, settings=AppSettings(max_pixels=2000), **args)
    assert (limited.modes["center"].folds[0].faces, limited.unreadable) == (2, 1)
    by_keyword = evaluate_adience(folds, faces, max_pixels=2000, **args)
    assert by_keyword.unreadable == 1


# --------------------------------------------------------------------------------------------
# predict, single engine


def test_predict_max_pixels_holds_for_the_single_engine(models, astronaut, tmp_path, capsys):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    cv2.imwrite(str(small), cv2.resize(astronaut, (200, 200)))
    cv2.imwrite(str(large), astronaut)  # 512 x 512
    options = onnx_options(models)
    argv = ["predict", str(small), str(large), "--max-pixels", "100000", "--crop", "center"]
    argv += ["--age-model", options["age_model"], "--gender-model", options["gender_model"]]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"skipped {large}: PNG image of 512 x 512 = 262,144 pixels, over the 100,000" in err
    assert "1 photo(s)" in out and "1 skipped" in out
