"""Fixtures shared by every test: reference files, OpenCV's Caffe reader, small nets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    override = os.environ.get("CAFFE_COMPAT_SHARED")
    return Path(override) if override else ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared/levi_hassner: the released Levi-Hassner files and real-Caffe references."""
    folder = _shared_root() / "levi_hassner"
    if not folder.is_dir():
        pytest.skip(f"reference folder {folder} is absent (set CAFFE_COMPAT_SHARED to point at it)")
    return folder


@pytest.fixture(scope="session")
def cv2_caffe():
    """OpenCV with its Caffe importer (4.x): the independent reference for parity tests."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer (removed in 5.0)")
    return cv2


@pytest.fixture(autouse=True, scope="session")
def _never_import_bare_folders():
    """The repo's converters/, proto/ and zoo/ must only ever load as caffe_compat subpackages."""
    yield
    leaked = [name for name in ("converters", "proto", "zoo") if name in sys.modules]
    assert not leaked, f"bare top-level modules imported: {leaked}"
