"""Fixtures shared by every test: reference files, OpenCV's Caffe reader, small nets."""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    override = os.environ.get("CAFFE_COMPAT_SHARED")
    return Path(override) if override else ROOT.parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        help="run every tier: the slow whole-network tests too (the default is the fast tier)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--all"):
        config.option.markexpr = ""  # drops pyproject's `-m 'not slow and not ray and not train'`
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `pytest -n N` (the README's test command): N worker processes share the cores, so each
        # computes on one thread (its subprocesses too) instead of N x cores threads fighting.
        os.environ["OMP_NUM_THREADS"] = "1"
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)


# A test may skip only for what this machine lacks: an optional package, the ../shared reference
# files, CUDA, an OpenCV with the Caffe importer (OpenCV 4) or a platform feature. A skip for a
# missing feature of the project is a failure: the test must fail until the feature exists.
ALLOWED_SKIPS = re.compile(
    r"not installed|could not import|absent|CUDA|OpenCV|Ray|grpcio-tools|setuptools|Haar|platform",
    re.IGNORECASE,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not ALLOWED_SKIPS.search(reason):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped for a reason tests may not skip for: {reason!r} (allowed: a missing "
            "optional dependency, ../shared, CUDA, OpenCV 4, a platform feature)"
        )


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared/levi_hassner: the released Levi-Hassner files and real-Caffe references."""
    folder = _shared_root() / "levi_hassner"
    if not folder.is_dir():
        pytest.skip(f"reference folder {folder} is absent (set CAFFE_COMPAT_SHARED to point at it)")
    return folder


@pytest.fixture(scope="session")
def caffe_reference(shared: Path) -> Path:
    """../shared/levi_hassner/caffe_reference: a model written by BVLC Caffe and its blobs."""
    folder = shared / "caffe_reference"
    if not (folder / "age_seed3_caffe_written.caffemodel").is_file():
        pytest.skip(f"{folder} is absent: no real-Caffe files to compare with")
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
def layer_check(tmp_path, request):
    """``layer_check(prototxt, expected=None, *, feeds=None, blobs=None, opencv=True, tol=1e-4)``:
    write a small net and its weights as real files, then compare every blob of our PyTorch module
    and ONNX model with OpenCV 4's Caffe reader and/or ``expected(feeds, weights)`` (a numpy version
    of Caffe's formula), at the prototxt's batch and at batch 3. See tests/_harness.py."""
    from _harness import check_layer

    return functools.partial(check_layer, tmp_path, request)


@pytest.fixture
def layer_parity(layer_check):
    """``layer_parity(prototxt, *, blobs=None, feeds=None, method="he", rtol=1e-4, atol=...)``:
    the OpenCV-only form of ``layer_check`` (fixed feeds run at their own batch only)."""

    def run(prototxt, *, blobs=None, feeds=None, method="he", rtol=1e-4, atol=1e-4, **_):
        fixed = None if feeds is None else (lambda n: feeds)
        reports = layer_check(
            prototxt,
            blobs=blobs,
            feeds=fixed,
            tol=max(rtol, atol),
            dynamic=feeds is None,
            method=method,
        )
        return reports[0]

    return run


@pytest.fixture(scope="session")
def astronaut():
    """A public-domain photo with one frontal face (scikit-image's data module), as BGR."""
    import numpy as np

    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed")
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="session")
def judge() -> str:
    """The independent judge whole-net checks are named after: OpenCV 4's Caffe reader where it
    is installed, else the float64 reference (``caffe_compat.reference``), which runs anywhere."""
    from _harness import judge_name

    return judge_name()


class _LbpFaces:
    """Stand-in for OpenCV 4's Haar cascade where OpenCV has none (OpenCV 5): scikit-image's LBP
    frontal-face cascade (a Viola-Jones detector too), so tests of the predictor that need faces
    found in photos run on every OpenCV. Same call and result shape as ``HaarDetector``."""

    def __init__(self, *, min_size: int = 30, max_side: int = 1280, **_: object) -> None:
        from skimage import data
        from skimage.feature import Cascade

        from caffe_compat.app import faces
        from caffe_compat.errors import CaffeCompatError

        why_not = faces.haar_available()  # a test may simulate an OpenCV without cascades
        if why_not is not None:
            raise CaffeCompatError(f"{why_not}; use the SSD face detector (detector 'ssd') instead")

        self.cascade = Cascade(data.lbp_frontal_face_cascade_filename())
        self.min_size, self.max_side = min_size, max_side

    def __call__(self, image):
        import numpy as np

        from caffe_compat.app.faces import Detection

        rgb = np.ascontiguousarray(image[:, :, ::-1])
        height, width = rgb.shape[:2]
        side = max(self.min_size * 2, 60)
        found = self.cascade.detect_multi_scale(
            img=rgb,
            scale_factor=1.2,
            step_ratio=1,
            min_size=(side, side),
            max_size=(min(height, width), min(height, width)),
            min_neighbor_number=8,  # fewer false faces than the default 4
        )
        boxes = sorted((f["c"], f["r"], f["width"], f["height"]) for f in found)
        return [Detection(tuple(int(v) for v in box)) for box in boxes]


@pytest.fixture(autouse=True, scope="session")
def _faces_without_haar():
    """Where OpenCV has no Haar cascade (5.x), 'haar' means the LBP stand-in in tests."""
    from caffe_compat.app import faces

    if faces.haar_available() is None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(faces, "HaarDetector", _LbpFaces)
        patch.setattr(faces, "haar_available", lambda: None)
        yield
