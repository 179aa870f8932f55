"""Whole-architecture parity for the classic Caffe model zoo, against OpenCV 4's Caffe reader.

Each net is the project's own deploy prototxt (tests/nets/data/), with calibrated synthesized
weights written as a real caffemodel. OpenCV reads the same two files; our PyTorch module (CPU,
plus CUDA where present) and our ONNX model in ONNX Runtime must match it on every blob within
verify's default tolerance (max abs <= max(1e-4 x max|ref|, 1e-4)), give the same argmax on
8 varied image-like inputs, and the softmax must vary (several distinct classes).

Fast tier, at a reduced input size where the architecture allows one (the same layers and
settings, smaller activations; InnerProduct widths follow the input): CaffeNet at 99x99, VGG-16
and both DEX nets at 64x64, MobileNet v1 at 128x128 (global pooling), SqueezeNet 1.1 and
GoogLeNet at their real sizes. ResNet-50 and GoogLeNet end in a 7x7 AVE pool that fixes the input
at 224 (ResNet-50 takes ~45 s here, so it is slow-only); FCN-8s pads conv1_1 by 100 and carries
134M parameters, so no input size makes it fast. Every architecture runs at its real input size
in the slow tier.
"""

from __future__ import annotations

import numpy as np
import pytest
from _harness import judge_name, judge_run, parity_devices
from nets import _zoo

from caffe_compat.app.readouts import expected_age
from caffe_compat.converters.onnx.export import to_onnx
from caffe_compat.verify import Tolerance
from caffe_compat.verify.backends import run_onnxruntime, run_torch

BATCH = 8
RUNS = ("torch-cpu", "onnxruntime-cpu")

# Whole nets at reduced sizes: two in the fast tier (CaffeNet: LRN, grouped convolutions, dropout;
# DEX: VGG-16's layout), the rest with the slow tier (the fast tier must fit 6 minutes on 2 cores).
WHOLE_NET = pytest.mark.slow
FAST = [
    pytest.param("caffenet", (99, 99), id="caffenet"),
    pytest.param("vgg16", (64, 64), id="vgg16", marks=WHOLE_NET),
    pytest.param("dex_age", (64, 64), id="dex_age"),
    pytest.param("dex_gender", (64, 64), id="dex_gender", marks=WHOLE_NET),
    pytest.param("squeezenet11", None, id="squeezenet11", marks=WHOLE_NET),
    pytest.param("mobilenet_v1", (128, 128), id="mobilenet_v1", marks=WHOLE_NET),
    pytest.param("googlenet", None, id="googlenet", marks=WHOLE_NET),
]
SLOW = ["caffenet", "vgg16", "dex_age", "dex_gender", "mobilenet_v1", "resnet50"]


def check_classifier(net: _zoo.ZooNet) -> dict[str, float]:
    """Run the parity bar on ``net``; returns max abs error on the output per back end."""
    graph = net.loaded.graph
    (output,) = graph.outputs
    report = _zoo.parity(net, _zoo.inputs(net, BATCH), devices=parity_devices())
    assert report.passed, report.render(all_rows=False)
    assert judge_name() in {c.reference for c in report.comparisons}, report.references
    every = {v for v in graph.values if v not in graph.inputs}
    for backend in RUNS:
        compared = {c.value for c in report.comparisons if c.backend == backend}
        assert compared == every, f"{backend}: not compared {sorted(every - compared)[:5]}"
        agreements = [a for a in report.argmax if a.backend == backend]  # one per judge
        assert agreements and all(a.agree == a.total == BATCH for a in agreements)
    classes = graph.shapes[output][1]
    assert report.distinct_classes[output] >= min(3, classes), "the softmax is constant"
    return {
        c.backend: c.max_abs
        for c in report.comparisons
        if c.value == output and c.reference == judge_name()
    }


@pytest.mark.parametrize(("name", "size"), FAST)
def test_zoo_net_matches_opencv(opencv_exact, tmp_path, name, size):
    check_classifier(_zoo.synthesized(name, tmp_path, size=size))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_zoo_net_matches_opencv_at_real_size(opencv_exact, tmp_path, name):
    check_classifier(_zoo.synthesized(name, tmp_path))


def test_dex_expected_age_agrees_with_opencv(opencv_exact, tmp_path):
    """DEX reports sum_i i * p_i; ours and OpenCV's must agree and vary from face to face."""
    net = _zoo.synthesized("dex_age", tmp_path, size=(64, 64))
    graph = net.loaded.graph
    feeds = _zoo.inputs(net, BATCH)
    ours = run_torch(graph, feeds, ["prob"])["prob"]
    theirs = judge_run(net.loaded, net.prototxt, net.weights, feeds, ["prob"])["prob"]
    ages = expected_age(ours)
    assert ours.shape == (BATCH, 101)
    np.testing.assert_allclose(ages, expected_age(theirs), atol=1e-2)
    assert np.all((ages >= 0) & (ages <= 100)) and np.ptp(ages) > 1.0


def check_segmenter(net: _zoo.ZooNet, batch: int) -> None:
    """Every blob within tolerance, and the same class at every pixel whose top-two scores
    are further apart than the tolerance (closer ones may legitimately flip)."""
    graph = net.loaded.graph
    feeds = _zoo.inputs(net, batch)
    report = _zoo.parity(net, feeds, devices=parity_devices())
    assert report.passed, report.render(all_rows=False)
    every = {v for v in graph.values if v not in graph.inputs}
    for backend in RUNS:
        assert {c.value for c in report.comparisons if c.backend == backend} == every
    reference = judge_run(net.loaded, net.prototxt, net.weights, feeds, ["score"])["score"]
    assert reference.shape == (batch, 21, *graph.inputs["data"][2:])
    top2 = np.sort(reference, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * Tolerance().limit(reference)
    assert clear.mean() > 0.99
    expected = reference.argmax(axis=1)
    outputs = {
        "torch": run_torch(graph, feeds, ["score"])["score"],
        "onnxruntime": run_onnxruntime(to_onnx(graph).SerializeToString(), feeds)["score"],
    }
    for backend, score in outputs.items():
        assert np.array_equal(score.argmax(axis=1)[clear], expected[clear]), backend
    assert len(np.unique(expected)) >= 3, "every pixel gets the same class"


@pytest.mark.slow
def test_fcn8s_matches_opencv_at_real_size(opencv_exact, tmp_path):
    """FCN-8s at 500x500: deconvolutions with FCN's fixed bilinear upsampling, Crop at offsets
    5, 9 and 31, Eltwise fusion; one image (250,000 pixels classified)."""
    check_segmenter(_zoo.synthesized("fcn8s", tmp_path, batch=2), batch=1)
