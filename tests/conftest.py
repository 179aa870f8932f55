"""Fixtures shared by every test: reference files, OpenCV's Caffe reader, small nets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def parity_devices() -> tuple[str, ...]:
    """PyTorch devices every parity test covers: the CPU, plus CUDA where a device exists."""
    import torch

    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


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


@pytest.fixture
def layer_parity(tmp_path, cv2_caffe):
    """Check a small net (prototxt text) end to end against OpenCV 4's Caffe reader.

    Weights are synthesised for the net's shapes (or given), written as a real caffemodel, then
    OpenCV, our PyTorch module and our ONNX model in ONNX Runtime run the same seeded inputs and
    every blob is compared. Returns the verify report (already asserted to pass).
    """
    from caffe_compat.io.writer import definitions_only, write_caffemodel
    from caffe_compat.load import load_net
    from caffe_compat.synth import synthesize
    from caffe_compat.verify import Tolerance, verify_loaded

    def run(
        prototxt: str,
        *,
        blobs: dict | None = None,
        feeds: dict | None = None,
        batch: int = 2,
        seed: int = 0,
        method: str = "he",
        rtol: float = 1e-4,
        atol: float = 1e-5,
    ):
        deploy = tmp_path / "net.prototxt"
        deploy.write_text(prototxt)
        loaded = load_net(deploy)
        weights = blobs if blobs is not None else synthesize(loaded, seed=seed, method=method)
        model = tmp_path / "net.caffemodel"
        write_caffemodel(model, definitions_only(loaded.net.layer), weights)
        loaded = load_net(deploy, model)
        if feeds is None:
            rng = np.random.default_rng(seed)
            feeds = {
                name: rng.standard_normal((batch, *shape[1:])).astype(np.float32)
                for name, shape in loaded.graph.inputs.items()
            }
        report = verify_loaded(
            loaded,
            weights_path=str(model),
            feeds=feeds,
            tolerance=Tolerance(rtol=rtol, atol=atol),
            devices=parity_devices(),
        )
        assert report.comparisons, "nothing was compared"
        assert report.passed, report.render(all_rows=False)
        return report

    return run
