"""Fixtures for the application tests: synthesized nets and a folder of photos with junk."""

from __future__ import annotations

from pathlib import Path

import pytest
from _album import make_album


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    from _models import synth_models

    return synth_models(tmp_path_factory)


@pytest.fixture
def album(tmp_path, astronaut) -> Path:
    pytest.importorskip("cv2")
    return make_album(tmp_path / "album", astronaut)
