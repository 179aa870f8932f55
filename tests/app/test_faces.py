"""Faces with whatever OpenCV pip installs: Haar where OpenCV has it (4.x), else the zoo's res10
SSD face detector, fetched like the nets (tested against a local HTTP server, synthesized weights
in the released shapes), and one line that says which file, where and from where when offline."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from _http import Server, send

from caffe_compat.app import faces
from caffe_compat.app.faces import HaarDetector, SSDDetector, haar_available, make_detector
from caffe_compat.errors import CaffeCompatError
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.zoo import FileSpec, Source, load_card

CARD = load_card(faces.ZOO_DETECTOR)


@pytest.fixture(scope="module")
def detector_weights(tmp_path_factory) -> bytes:
    """Weights in the released res10 shapes (about 2.7 MB), calibrated so scores vary."""
    loaded = load_net(CARD.prototxt_path())
    path = tmp_path_factory.mktemp("res10") / CARD.weights.file
    write_caffemodel(path, definitions_only(loaded.net.layer), synthesize(loaded, seed=3))
    return path.read_bytes()


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    srv = Server()
    yield srv
    srv.close()


def _served_card(monkeypatch, server, data: bytes):
    """The zoo card, its weights served locally with this file's identity."""
    server.routes["/res10.caffemodel"] = send(data)
    weights = FileSpec(
        file=CARD.weights.file,
        git_blob=None,
        sources=(Source(server.url("/res10.caffemodel"), "file"),),
        sha1=hashlib.sha1(data).hexdigest(),
    )
    card = dataclasses.replace(CARD, weights=weights)
    monkeypatch.setattr("caffe_compat.zoo.load_card", lambda name: card)
    return card


def test_default_is_haar_where_opencv_has_it_else_the_zoo_ssd(monkeypatch, tmp_path):
    if haar_available() is None:
        assert isinstance(make_detector(None), HaarDetector)
    monkeypatch.setattr(faces, "haar_available", lambda: "OpenCV 5.0.0 has no Haar cascades")
    with pytest.raises(CaffeCompatError) as info:
        make_detector(None, cache_dir=tmp_path)  # falls to the SSD, whose weights are absent
    message = str(info.value)
    assert "\n" not in message
    assert CARD.weights.file in message and str(tmp_path / CARD.name) in message
    assert "opencv_3rdparty" in message  # where to get it


def test_haar_named_where_opencv_has_none_says_what_to_use(monkeypatch):
    monkeypatch.setattr(
        faces, "haar_available", lambda: "OpenCV 5.0.0 has no Haar cascades (OpenCV 5 removed it)"
    )
    with pytest.raises(CaffeCompatError, match="use the SSD face detector") as info:
        make_detector("haar")
    assert "install opencv" not in str(info.value)


@pytest.mark.slow  # whole-net work; the fast tier must fit 6 minutes on 2 cores
def test_zoo_ssd_downloads_checks_and_detects(monkeypatch, server, tmp_path, detector_weights):
    _served_card(monkeypatch, server, detector_weights)
    detector = make_detector(("ssd",), cache_dir=tmp_path, download=True, confidence=0.0)
    assert isinstance(detector, SSDDetector)
    assert (tmp_path / CARD.name / CARD.weights.file).read_bytes() == detector_weights
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    found = detector(image)
    assert found, "with confidence 0 every kept prior is a detection"
    for detection in found:
        x, y, w, h = detection.box
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 320 and y + h <= 240
        assert 0.0 <= detection.score <= 1.0
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True)


def test_zoo_ssd_refuses_other_bytes(monkeypatch, server, tmp_path, detector_weights):
    card = _served_card(monkeypatch, server, detector_weights)
    server.routes["/res10.caffemodel"] = send(detector_weights[:-1] + b"\0")
    with pytest.raises(CaffeCompatError, match="sha1"):
        make_detector("ssd", cache_dir=tmp_path, download=True)
    assert not (tmp_path / card.name / card.weights.file).exists()
