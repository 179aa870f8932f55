"""Fixtures for caffe_compat.dnn: real Caffe files with synthesized weights, an empty cache home.

Weights are He-initialised (``synthesize(method="he")``, no torch needed, so the same fixtures run
in the OpenCV 5 environment) and then the output layers are rescaled so scores vary: the numpy
judge (tests/_numpy_nets.py) or the ONNX reference evaluator measures the head's spread first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _dnn_files import LH_MEAN, RES10, cv2, ssd_heads, write_net

from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize


@pytest.fixture(scope="session")
def _session_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache-home")


@pytest.fixture(autouse=True)
def cache_home(_session_home, monkeypatch) -> Path:
    """The cache home of these tests: one for the session, never the user's."""
    monkeypatch.setenv("CAFFE_COMPAT_HOME", str(_session_home))
    return _session_home


@pytest.fixture
def fresh_home(tmp_path, monkeypatch) -> Path:
    """An empty cache home for this test alone."""
    home = tmp_path / "cache-home"
    monkeypatch.setenv("CAFFE_COMPAT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def face(astronaut) -> np.ndarray:
    """The astronaut's face with a margin (BGR, uint8), as a detector would crop it."""
    return np.ascontiguousarray(astronaut[20:240, 140:340])


@pytest.fixture(scope="session")
def age_files(shared, face, tmp_path_factory):
    """(prototxt, caffemodel, blobs) for the official age deploy net, fc8 scaled so that the
    face's age probabilities spread (He weights alone give a one-hot softmax)."""
    from _numpy_nets import levi_hassner

    prototxt = shared / "deploy_age.prototxt"
    blobs = synthesize(load_net(prototxt), seed=3, method="he")
    x = cv2.dnn.blobFromImage(face, 1.0, (227, 227), LH_MEAN, swapRB=False)
    spread = float(levi_hassner(blobs, x)["fc8"].std())
    blobs["fc8"] = [(b * (1.5 / spread)).astype(np.float32) for b in blobs["fc8"]]
    folder = tmp_path_factory.mktemp("age")
    return prototxt, write_net(folder, prototxt, blobs), blobs


@pytest.fixture(scope="session")
def res10_files(astronaut, tmp_path_factory):
    """(prototxt, caffemodel, blob) for the res10 300x300 SSD face detector: He weights, each
    box head rescaled on the tutorial's blob (offsets to unit spread, class scores to 3) and the
    face scores lowered by 12, so a few hundred of the 8,892 priors pass the 0.01 threshold and
    the best score near 1, as with a trained detector."""
    blob = cv2.dnn.blobFromImage(astronaut, 1.0, (300, 300), (104.0, 177.0, 123.0))
    blobs = synthesize(load_net(RES10), seed=4, method="he")
    folder = tmp_path_factory.mktemp("res10")
    heads = sorted(name for name in blobs if "_mbox_loc" in name or "_mbox_conf" in name)
    raw = dict(zip(heads, ssd_heads(RES10, write_net(folder, RES10, blobs), blob, heads)))
    for name in heads:
        w, b = blobs[name]
        spread = 3.0 if "_conf" in name else 1.0
        scale = np.float32(spread / max(float(raw[name].std()), 1e-6))
        b = b * scale
        if "_conf" in name:
            b[1::2] -= np.float32(12.0)  # channel 2k + 1: the face score of prior k
        blobs[name] = [w * scale, b.astype(np.float32)]
    return RES10, write_net(folder, RES10, blobs), blob
