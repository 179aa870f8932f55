"""A folder of photos with junk in it, for the application tests (tests/app)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Pixel limit the tests pass, so that a 3000 x 3000 PNG of 27 KB is a decompression bomb.
TEST_MAX_PIXELS = 4_000_000
READABLE = ("astronaut.jpg", "trip/pair.png", "trip/gray.png", "trip/scan")
FACES = {"astronaut.jpg": 1, "trip/pair.png": 2, "trip/gray.png": 0, "trip/scan": 1}
UNREADABLE = {
    "notes.txt": "not an image",
    "empty.jpg": "empty (0 bytes)",
    "broken.jpg": "corrupt",
    "bomb.png": "pixel limit",
    "loop_a": "symlink loop",
    "loop_b": "symlink loop",
    "fifo": "FIFO",
}


def onnx_options(models) -> dict[str, str]:
    return {"age_model": models["age"]["onnx"], "gender_model": models["gender"]["onnx"]}


def make_album(root: Path, astronaut: np.ndarray) -> Path:
    """Photos with 1, 2, 0 and 1 faces (one without an extension), and every kind of junk."""
    import cv2

    (root / "trip").mkdir(parents=True)
    cv2.imwrite(str(root / "astronaut.jpg"), astronaut)
    pair = np.ascontiguousarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1))
    cv2.imwrite(str(root / "trip" / "pair.png"), pair)
    cv2.imwrite(str(root / "trip" / "gray.png"), np.full((120, 160, 3), 128, np.uint8))
    bigger = cv2.resize(astronaut, (700, 700), interpolation=cv2.INTER_AREA)
    (root / "trip" / "scan").write_bytes(cv2.imencode(".png", bigger)[1].tobytes())
    (root / "notes.txt").write_text("shopping list\n")
    (root / "empty.jpg").write_bytes(b"")
    (root / "broken.jpg").write_bytes(cv2.imencode(".jpg", astronaut)[1].tobytes()[:3000])
    cv2.imwrite(str(root / "bomb.png"), np.zeros((3000, 3000, 3), np.uint8))
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    os.mkfifo(root / "fifo")
    cv2.imwrite(str(root / ".hidden.jpg"), astronaut)  # dot-names are not listed
    return root
