"""Whole-architecture parity for MobileNet-SSD (chuanqi305's Caffe detector, PASCAL VOC, 300x300),
against OpenCV 4's Caffe reader.

The net is the project's own deploy prototxt (tests/nets/data/mobilenet_ssd.prototxt, in the
published file's own form: legacy ``input``/``input_shape``, DetectionOutput under a TEST-phase
rule), with calibrated synthesized weights written as a real caffemodel. On 3 varied image-like
inputs, our PyTorch module (CPU, plus CUDA where present) and our ONNX model in ONNX Runtime must
match OpenCV on every blob within verify's default tolerance (max abs <= max(1e-4 x max|ref|,
1e-4); DetectionOutput's rows paired as sets), and give OpenCV's detections after NMS: the same
images and labels, scores and boxes within that tolerance, with a score of detections per image.

Two choices make the synthesized net a fair test of this architecture (both measured on the three
back ends against a float64 run of the same graph):

* ReLUs mostly active. ``synthesize`` starts each Scale layer's bias near 0, so every one of the
  35 ReLUs in this plain (non-residual) chain cuts its input at its median; float32 rounding noise
  then grows about 1.2x per layer relative to the signal, and at conv17_2 every implementation,
  OpenCV included, is up to ~1e-4 x max|blob| from the exact result: the tolerance itself (with
  synthesize's own Scale start this test fails, the softmax 1.7-2x over the tolerance). Scale
  biases near +1 (most units active) keep the signal: every back end then stays within 1e-5 x
  max|blob| of OpenCV, so the tolerance checks the layers, not the rounding.
* Confident detections, but not too many. synth sets the SSD head on real photos (a handful of
  detections over 0.5 each); on these image-like inputs that leaves a few per image, so each
  prior's background logit is moved by ``BACKGROUND_SHIFT``: about 25 detections per image over a
  dozen classes, with scores from the threshold to ~0.8 and no image at keep_top_k.

The test feeds mean-subtracted images like the other zoo tests; OpenCV users also scale by
1/127.5 (``blobFromImage(image, 0.007843, (300, 300), 127.5)``), which changes no layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from _harness import judge_name, judge_run, parity_devices

from caffe_compat.converters.onnx.export import to_onnx
from caffe_compat.converters.torch.detection_post import detection_output
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import LoadedNet, load_net
from caffe_compat.proto import caffe_pb2
from caffe_compat.tools import synth
from caffe_compat.verify import Tolerance, verify_loaded
from caffe_compat.verify.backends import run_onnxruntime, run_torch
from caffe_compat.verify.detections import align_detections, canonical_detections
from caffe_compat.verify.inputs import feeds_for

PROTOTXT = Path(__file__).resolve().parent / "data" / "mobilenet_ssd.prototxt"
F32 = np.float32
BATCH = 3
CALIBRATION_BATCH = 8
CLASSES = 21
KEEP_TOP_K = 100
THRESHOLD = 0.3
# synth sets the class scores for a handful of detections over 0.5 on real photos; background
# lowered by 2 gives 41 to 45 detections over the 0.3 threshold per image here, 10 or 11 classes.
BACKGROUND_SHIFT = -2.0
HEADS = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
RUNS = ("torch-cpu", "onnxruntime-cpu")

# Published layout: (source blob, its map at 300x300, priors per location, min, max, ratios).
MULTIBOX = [
    ("conv11", 19, 3, 60, None, [2.0]),
    ("conv13", 10, 6, 105, 150, [2.0, 3.0]),
    ("conv14_2", 5, 6, 150, 195, [2.0, 3.0]),
    ("conv15_2", 3, 6, 195, 240, [2.0, 3.0]),
    ("conv16_2", 2, 6, 240, 285, [2.0, 3.0]),
    ("conv17_2", 1, 6, 285, 300, [2.0, 3.0]),
]
PRIORS = 1917  # 19*19*3 + (10*10 + 5*5 + 3*3 + 2*2 + 1) * 6


@dataclass
class Detector:
    weights: Path
    loaded: LoadedNet
    feeds: dict[str, np.ndarray]


def _active_scale(shapes: list[tuple[int, ...]], rng: np.random.Generator) -> list[np.ndarray]:
    """Scale starting values: gamma U(0.7, 1.3) as synthesize draws it, beta N(1, 0.1) instead of
    N(0, 0.1), so the following ReLU passes ~84% of the (unit-variance) BatchNorm output."""
    gamma = rng.uniform(0.7, 1.3, shapes[0]).astype(F32)
    return [gamma] + [rng.normal(1.0, 0.1, s).astype(F32) for s in shapes[1:]]


@pytest.fixture(scope="module")
def ssd(tmp_path_factory) -> Detector:
    """The detector with calibrated synthesized weights, as real files, and its test images."""
    folder = tmp_path_factory.mktemp("mobilenet_ssd")
    loaded = load_net(PROTOTXT)
    blobs = synth.synthesize(
        loaded, seed=0, batch=CALIBRATION_BATCH, starts={"Scale": _active_scale}
    )
    for name, layer_blobs in blobs.items():
        if name.endswith("_mbox_conf"):
            bias = layer_blobs[1].copy()
            bias[0::CLASSES] += F32(BACKGROUND_SHIFT)  # channel k * 21: background of prior k
            layer_blobs[1] = bias
    weights = folder / "mobilenet_ssd.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
    loaded = load_net(PROTOTXT, weights)
    # Images other than the calibration ones (synthesize draws those from seed 1).
    return Detector(weights, loaded, feeds_for(loaded.graph.inputs, BATCH, seed=1001))


def test_prototxt_is_the_published_architecture():
    """The data file has MobileNet-SSD's published structure and settings."""
    loaded = load_net(PROTOTXT)
    graph = loaded.graph
    nodes = {n.name: n for n in graph.nodes}
    assert graph.inputs == {"data": (1, 3, 300, 300)}
    assert graph.shapes["mbox_priorbox"] == (1, 2, PRIORS * 4)
    assert graph.shapes["mbox_loc"] == (1, PRIORS * 4)
    assert graph.shapes["mbox_conf_flatten"] == (1, PRIORS * CLASSES)

    depthwise = [n for n in graph.nodes if n.name.endswith("/dw")]
    assert len(depthwise) == 13
    for node in depthwise:
        conv = node.param.convolution_param
        assert conv.group == conv.num_output == graph.shapes[node.inputs[0]][1], node.name
    # Every body and extra convolution: bias-free, then BatchNorm, Scale with bias, ReLU in place.
    body = [n for n in graph.nodes if n.type == "Convolution" and "mbox" not in n.name]
    assert len(body) == 1 + 2 * 13 + 8
    order = [n.name for n in graph.nodes]
    for node in body:
        assert not node.param.convolution_param.bias_term, node.name
        at = order.index(node.name)
        following = [nodes[name] for name in order[at + 1 : at + 4]]
        assert [n.type for n in following] == ["BatchNorm", "Scale", "ReLU"], node.name
        assert following[1].param.scale_param.bias_term, node.name
        assert all(list(n.param.bottom) == list(n.param.top) == [node.name] for n in following)

    for source, side, per_location, min_size, max_size, ratios in MULTIBOX:
        assert graph.shapes[source][2:] == (side, side), source
        prior = nodes[f"{source}_mbox_priorbox"].param.prior_box_param
        assert list(prior.min_size) == [min_size], source
        assert list(prior.max_size) == ([max_size] if max_size else []), source
        assert list(prior.aspect_ratio) == ratios and prior.flip and not prior.clip, source
        assert list(prior.variance) == pytest.approx([0.1, 0.1, 0.2, 0.2]), source
        assert prior.offset == 0.5 and not prior.HasField("step"), source
        assert graph.shapes[f"{source}_mbox_priorbox"] == (1, 2, side * side * per_location * 4)
        for head, width in (("loc", 4), ("conf", CLASSES)):
            conv = nodes[f"{source}_mbox_{head}"].param.convolution_param
            assert (conv.num_output, list(conv.kernel_size)) == (per_location * width, [1])

    det = nodes["detection_out"].param.detection_output_param
    assert (det.num_classes, det.background_label_id, det.share_location) == (CLASSES, 0, True)
    assert det.code_type == caffe_pb2.PriorBoxParameter.CENTER_SIZE
    assert (det.nms_param.nms_threshold, det.nms_param.top_k) == (pytest.approx(0.45), 100)
    assert (det.keep_top_k, det.confidence_threshold) == (KEEP_TOP_K, pytest.approx(THRESHOLD))


@pytest.mark.slow
def test_every_blob_matches_opencv(ssd, opencv_exact):
    """verify: every value of the graph, for PyTorch and ONNX Runtime, within the tolerance."""
    graph = ssd.loaded.graph
    report = verify_loaded(
        ssd.loaded,
        weights_path=str(ssd.weights),
        feeds=ssd.feeds,
        tolerance=Tolerance(),
        devices=parity_devices(),
    )
    assert report.passed, report.render(all_rows=False)
    assert judge_name() in {c.reference for c in report.comparisons}, report.references
    every = {v for v in graph.values if v not in graph.inputs}
    for backend in RUNS:
        compared = {c.value for c in report.comparisons if c.backend == backend}
        assert compared == every, f"{backend}: not compared {sorted(every - compared)[:5]}"


@pytest.mark.slow
def test_detections_match_opencv(ssd, opencv_exact):
    """OpenCV on the very files (legacy input, phase rule and all) against our PyTorch module and
    ONNX model: the same detections after NMS, several per image; and our DetectionOutput on
    OpenCV's own heads gives OpenCV's rows."""
    graph = ssd.loaded.graph
    wanted = ["detection_out", *HEADS]
    theirs = judge_run(ssd.loaded, PROTOTXT, ssd.weights, ssd.feeds, wanted)
    reference = canonical_detections(theirs["detection_out"])

    # Non-trivial: a score of boxes per image over many classes, none cut by keep_top_k, scores
    # from the threshold well up, boxes of varied size.
    for image in range(BATCH):
        rows = reference[reference[:, 0] == image]
        assert 10 <= len(rows) < KEEP_TOP_K, (image, len(rows))
        assert len(np.unique(rows[:, 1])) >= 8, image
    assert np.all(reference[:, 1] >= 1) and reference[:, 2].min() > THRESHOLD
    assert reference[:, 2].max() > 0.6
    widths = reference[:, 5] - reference[:, 3]
    # (a box clipped flat at the image border has width 0, as in Caffe)
    assert np.all(widths >= 0) and np.mean(widths > 0) > 0.9
    assert widths.max() > 3 * widths[widths > 0].min()

    ours = {f"torch-{d}": run_torch(graph, ssd.feeds, wanted, d) for d in parity_devices()}
    model = to_onnx(graph, extra_outputs=HEADS)
    onnx.checker.check_model(model, full_check=True)
    ours["onnxruntime"] = run_onnxruntime(model.SerializeToString(), ssd.feeds)
    score_limit = Tolerance().limit(reference[:, 2])
    box_limit = Tolerance().limit(reference[:, 3:])
    for backend, values in ours.items():
        mine, expected, _ = align_detections(values["detection_out"], reference)
        assert mine.shape == expected.shape, backend
        np.testing.assert_array_equal(mine[:, :2], expected[:, :2], err_msg=backend)
        np.testing.assert_allclose(mine[:, 2], expected[:, 2], atol=score_limit, err_msg=backend)
        np.testing.assert_allclose(mine[:, 3:], expected[:, 3:], atol=box_limit, err_msg=backend)

    # The layer alone, on OpenCV's bottoms: the same scores exactly, boxes to float rounding.
    rows = canonical_detections(
        detection_output(*(theirs[h] for h in HEADS), graph.node("detection_out"))
    )
    assert rows.shape == reference.shape
    np.testing.assert_array_equal(rows[:, :3], reference[:, :3])
    np.testing.assert_allclose(rows[:, 3:], reference[:, 3:], rtol=0, atol=1e-6)
