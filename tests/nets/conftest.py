"""Fixtures for whole-net parity: OpenCV 4 as the judge where installed (exact convolutions), else
the float64 reference."""

from __future__ import annotations

import pytest


@pytest.fixture
def opencv_exact(monkeypatch):
    """OpenCV's Caffe reader with Winograd convolution off (OpenCV >= 4.7 turns it on by default).

    Caffe convolves by im2col + GEMM; OpenCV's Winograd F(6x6, 3x3) path trades accuracy for
    speed. Measured on ResNet-50 (224x224, calibrated weights) against a float64 run of the same
    graph: OpenCV with Winograd is 1.2e-4 (relative to max|blob|) off at res5b_branch2b and
    2.6e-4 at fc1000, without it 3.4e-5 and 6.1e-5, like our PyTorch (3.7e-5, 5.8e-5) and ONNX
    Runtime (2.3e-5, 5.0e-5). With Winograd, ten res5 blobs exceed verify's default tolerance
    although our back ends are the closer ones to the exact result.
    """
    from _harness import judge_name

    if judge_name() != "opencv":
        return None  # no OpenCV 4 here: the float64 reference judges (tests/_harness.py)
    import cv2 as cv2_caffe

    original = cv2_caffe.dnn.readNetFromCaffe

    def read_exact(*args, **kwargs):
        net = original(*args, **kwargs)
        if hasattr(net, "enableWinograd"):
            net.enableWinograd(False)
        return net

    monkeypatch.setattr(cv2_caffe.dnn, "readNetFromCaffe", read_exact)
    return cv2_caffe
