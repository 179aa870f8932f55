"""Yolov3DetectionOutput and YoloDetectionOutput (YOLO v3 / v2 Caffe ports, eric612/MobileNet-YOLO):
PyTorch, ONNX Runtime and the float64 reference against the forks' Forward_cpu written out here
as their loops (per map, image, cell, box and class; ApplyNms's pairwise loop), and a whole
YOLOv3-tiny-shaped head through synth, convert and verify. OpenCV 4 reads darknet's region layers, not this Caffe one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffe_compat.cli.main import main

F32 = np.float32
BIASES = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def yolov3_loops(maps, classes, boxes, thr, nms, mask, scales):
    groups = len(mask) // len(maps)
    found = []
    for t, x in enumerate(maps):
        side = x.shape[3]
        for b in range(x.shape[0]):
            for cell in range(side * side):
                j, i = divmod(cell, side)
                for n in range(boxes):
                    v = x[b, n * (5 + classes) : (n + 1) * (5 + classes)].reshape(5 + classes, -1)[
                        :, cell
                    ]
                    m = mask[n + t * groups]
                    cx, cy = (i + sigmoid(v[0])) / side, (j + sigmoid(v[1])) / side
                    w = math.exp(v[2]) * BIASES[2 * m] / (side * scales[t])
                    h = math.exp(v[3]) * BIASES[2 * m + 1] / (side * scales[t])
                    for c in range(classes):
                        score = sigmoid(v[5 + c]) * sigmoid(v[4])
                        if score > thr:
                            found.append((score, c, cx, cy, w, h))
    found.sort(key=lambda f: -f[0])  # Python's sort is stable: the loop order breaks ties

    def iou(a, b):
        def overlap(c1, s1, c2, s2):
            return min(c1 + s1 / 2, c2 + s2 / 2) - max(c1 - s1 / 2, c2 - s2 / 2)

        w, h = overlap(a[2], a[4], b[2], b[4]), overlap(a[3], a[5], b[3], b[5])
        inter = 0 if w < 0 or h < 0 else w * h
        return inter / (a[4] * a[5] + b[4] * b[5] - inter)

    gone = set()
    for i in range(len(found) - 1):
        if i in gone:
            continue
        for j in range(i + 1, len(found)):
            if j not in gone and iou(found[i], found[j]) >= nms:
                gone.add(j)
    rows = [
        [0, c + 1, s, x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        for k, (s, c, x, y, w, h) in enumerate(found)
        if k not in gone
    ]
    if not rows:
        rows = [[i, -1, -1, -1, -1, -1, -1] for i in range(maps[-1].shape[0])]
    return np.array(rows, F32).reshape(1, 1, -1, 7)


def yolo_net(classes=2, thr=0.3, nms=0.45, sides=(3, 6), batch=2) -> str:
    channels = 3 * (5 + classes)
    shapes = " ".join(f"shape {{ dim: {batch} dim: {channels} dim: {s} dim: {s} }}" for s in sides)
    tops = " ".join(f'top: "m{t}"' for t in range(len(sides)))
    bottoms = " ".join(f'bottom: "m{t}"' for t in range(len(sides)))
    mask = " ".join(f"mask: {m}" for m in [3, 4, 5, 0, 1, 2][: 3 * len(sides)])
    scales = " ".join(f"anchors_scale: {32 // 2**t}" for t in range(len(sides)))
    biases = " ".join(f"biases: {b}" for b in BIASES)
    return (
        f'layer {{ name: "maps" type: "Input" {tops} input_param {{ {shapes} }} }}\n'
        f'layer {{ name: "det" type: "Yolov3DetectionOutput" {bottoms} top: "det" '
        f"yolov3_detection_output_param {{ num_classes: {classes} num_box: 3 confidence_threshold: "
        f"{thr} nms_threshold: {nms} {biases} {mask} {scales} mask_group_num: {len(sides)} }} }}"
    )


@pytest.mark.parametrize(
    "thr, nms, shift",
    [(0.3, 0.45, 0.0), (0.2, 0.7, 0.0), (0.5, 0.3, 1.0), (0.3, 0.45, -30.0)],  # last: nothing
)
def test_yolov3_detection_output(layer_check, thr, nms, shift):
    def feeds(n):
        rng = np.random.default_rng(11)
        return {
            "m0": (rng.normal(0, 1.5, (2, 21, 3, 3)) + shift).astype(F32),
            "m1": (rng.normal(0, 1.5, (2, 21, 6, 6)) + shift).astype(F32),
        }

    def expected(i, w):
        maps = [i["m0"].astype(np.float64), i["m1"].astype(np.float64)]
        return {"det": yolov3_loops(maps, 2, 3, thr, nms, [3, 4, 5, 0, 1, 2], [32, 16])}

    layer_check(yolo_net(thr=thr, nms=nms), expected, feeds=feeds, opencv=False, dynamic=False)


@pytest.mark.parametrize(
    "change, message",
    [
        (("mask_group_num: 2", "mask_group_num: 1"), "1, but the layer has 2 bottoms"),
        (("num_classes: 2", "num_classes: 3"), "channels"),
        (("mask: 5", "mask: 9"), "past the 6 anchors"),
    ],
)
def test_bad_settings_fail_in_one_line(tmp_path, change, message):
    from caffe_compat.errors import CaffeCompatError
    from caffe_compat.ir.load import load_net

    path = tmp_path / "net.prototxt"
    path.write_text(yolo_net().replace(*change))
    with pytest.raises(CaffeCompatError, match=message):
        load_net(path)


V2_BIASES = [0.73, 0.87, 2.42, 2.65, 4.30, 7.04, 10.24, 4.59, 12.68, 11.87]


def yolov2_loops(x, classes, boxes, thr, nms):
    """YoloDetectionOutputLayer::Forward_cpu: the swap to (cell, box, value), get_region_box,
    class_index_and_score (softmax, first maximum), then the same sort and ApplyNms."""
    side = x.shape[3]
    found = []
    for j in range(side):
        for i in range(side):
            for n in range(boxes):
                v = x[0, n * (5 + classes) : (n + 1) * (5 + classes), j, i]
                e = np.exp(v[5:] - v[5:].max())
                prob = e / e.sum()
                c = int(np.argmax(prob))
                score = sigmoid(v[4]) * prob[c]
                if score >= thr:
                    cx, cy = (i + sigmoid(v[0])) / side, (j + sigmoid(v[1])) / side
                    w = math.exp(v[2]) * V2_BIASES[2 * n] / side
                    h = math.exp(v[3]) * V2_BIASES[2 * n + 1] / side
                    found.append((score, c, cx, cy, w, h))
    return found


def rows_after_nms(found, nms, batch):
    found = sorted(found, key=lambda f: -f[0])

    def iou(a, b):
        def overlap(c1, s1, c2, s2):
            return min(c1 + s1 / 2, c2 + s2 / 2) - max(c1 - s1 / 2, c2 - s2 / 2)

        w, h = overlap(a[2], a[4], b[2], b[4]), overlap(a[3], a[5], b[3], b[5])
        inter = 0 if w < 0 or h < 0 else w * h
        return inter / (a[4] * a[5] + b[4] * b[5] - inter)

    gone = set()
    for i in range(len(found) - 1):
        if i not in gone:
            gone |= {
                j
                for j in range(i + 1, len(found))
                if j not in gone and iou(found[i], found[j]) >= nms
            }
    rows = [
        [0, c + 1, s, x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        for k, (s, c, x, y, w, h) in enumerate(found)
        if k not in gone
    ]
    rows = rows or [[i, -1, -1, -1, -1, -1, -1] for i in range(batch)]
    return np.array(rows, F32).reshape(1, 1, -1, 7)


@pytest.mark.parametrize(
    "thr, nms, shift", [(0.2, 0.45, 0.0), (0.05, 0.3, 0.0), (0.2, 0.45, -30.0)]
)
def test_yolo_v2_detection_output(layer_check, thr, nms, shift):
    biases = " ".join(f"biases: {b}" for b in V2_BIASES)
    prototxt = (
        'layer { name: "map" type: "Input" top: "map" input_param { shape { dim: 1 dim: 40 '
        "dim: 5 dim: 5 } } }\n"
        'layer { name: "det" type: "YoloDetectionOutput" bottom: "map" top: "det" '
        f"yolo_detection_output_param {{ num_classes: 3 num_box: 5 confidence_threshold: {thr} "
        f"nms_threshold: {nms} {biases} }} }}"
    )

    def feeds(n):
        rng = np.random.default_rng(5)
        return {"map": (rng.normal(0, 1.5, (1, 40, 5, 5)) + shift).astype(F32)}

    def expected(i, w):
        found = yolov2_loops(i["map"].astype(np.float64), 3, 5, thr, nms)
        return {"det": rows_after_nms(found, nms, 1)}

    layer_check(prototxt, expected, feeds=feeds, opencv=False, dynamic=False)


def test_yolo_v2_two_maps(layer_check):
    """MobileNet-YOLO's two-scale v2 head: the fork's loops on each bottom (same anchors, own
    side), the first map's candidates first, one sort and NMS over both."""
    biases = " ".join(f"biases: {b}" for b in V2_BIASES)
    prototxt = (
        'layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 1 '
        "dim: 40 dim: 3 dim: 3 } shape { dim: 1 dim: 40 dim: 6 dim: 6 } } }\n"
        'layer { name: "det" type: "YoloDetectionOutput" bottom: "a" bottom: "b" top: "det" '
        "yolo_detection_output_param { num_classes: 3 num_box: 5 confidence_threshold: 0.2 "
        f"nms_threshold: 0.45 {biases} }} }}"
    )

    def feeds(n):
        rng = np.random.default_rng(7)
        return {
            "a": rng.normal(0, 1.5, (1, 40, 3, 3)).astype(F32),
            "b": rng.normal(0, 1.5, (1, 40, 6, 6)).astype(F32),
        }

    def expected(i, w):
        found = yolov2_loops(i["a"].astype(np.float64), 3, 5, 0.2, 0.45)
        found += yolov2_loops(i["b"].astype(np.float64), 3, 5, 0.2, 0.45)
        return {"det": rows_after_nms(found, 0.45, 1)}

    layer_check(prototxt, expected, feeds=feeds, opencv=False, dynamic=False)


TINY = """
input: "data"
input_shape { dim: 1 dim: 3 dim: 64 dim: 64 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 16 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3" convolution_param { num_output: 16 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4" convolution_param { num_output: 16 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "yolo_big" type: "Convolution" bottom: "conv4" top: "yolo_big" convolution_param { num_output: 24 kernel_size: 1 } }
layer { name: "yolo_small" type: "Convolution" bottom: "conv3" top: "yolo_small" convolution_param { num_output: 24 kernel_size: 1 } }
layer { name: "detection_out" type: "Yolov3DetectionOutput" bottom: "yolo_big" bottom: "yolo_small" top: "detection_out"
  yolov3_detection_output_param { num_classes: 3 num_box: 3 confidence_threshold: 0.2 nms_threshold: 0.45
    biases: 10 biases: 14 biases: 23 biases: 27 biases: 37 biases: 58 biases: 81 biases: 82 biases: 135 biases: 169 biases: 344 biases: 319
    mask: 3 mask: 4 mask: 5 mask: 0 mask: 1 mask: 2 anchors_scale: 16 anchors_scale: 8 mask_group_num: 2 } }
"""


@pytest.mark.slow  # 10 to 60 s (three CLI runs, 20 images)
def test_yolov3_tiny_shaped_net_converts_and_verifies(tmp_path):
    net = tmp_path / "yolov3_tiny.prototxt"
    net.write_text(TINY)
    weights = tmp_path / "yolo.caffemodel"
    assert main(["synth", str(net), "-o", str(weights)]) == 0
    assert main(["convert", str(net), str(weights), "--to", "onnx", "-o", str(tmp_path / "y")]) == 0
    assert main(["verify", str(net), str(weights)]) == 0


def test_synth_tempers_yolo_objectness_on_the_photos(tmp_path, monkeypatch):
    """Noise-calibrated YOLO heads put many (box, class) pairs over the threshold; synth lowers
    the objectness channels (channel 4 of each box) until no photo has more than
    YOLO_KEPT_PER_PHOTO candidates, and leaves every other channel as calibrated."""
    from caffe_compat.ir.load import load_net
    from caffe_compat.shapes.yolo import objectness
    from caffe_compat.tools import synth

    net = tmp_path / "yolov3_tiny.prototxt"
    net.write_text(TINY.replace("dim: 64 dim: 64", "dim: 256 dim: 256"))

    def candidates(loaded) -> np.ndarray:
        photos = synth.photo_feeds(loaded.graph)
        found = synth._values(loaded.graph, photos, ["yolo_big", "yolo_small"])
        maps = [found["yolo_big"], found["yolo_small"]]
        logits, factors, threshold, at, period = objectness(
            loaded.graph.node("detection_out"), maps
        )
        assert period == 8 and not at and threshold == pytest.approx(0.2)
        return sum(
            ((f / (1 + np.exp(-o))) > threshold).reshape(len(o), -1).sum(axis=1)
            for o, f in zip(logits, factors)
        )

    tempered = load_net(net)
    blobs = synth.synthesize(tempered, seed=3, progress=False)
    assert 0 < candidates(tempered).max() <= synth.YOLO_KEPT_PER_PHOTO
    monkeypatch.setattr(synth, "_temper_yolo", lambda *args: None)
    plain = load_net(net)
    untempered = synth.synthesize(plain, seed=3, progress=False)
    assert candidates(plain).max() > 5 * synth.YOLO_KEPT_PER_PHOTO
    for name in ("yolo_big", "yolo_small"):
        channel = np.arange(len(blobs[name][1])) % 8
        lowered = untempered[name][1][channel == 4] - blobs[name][1][channel == 4]
        assert np.all(lowered > 0) and np.ptp(lowered) < 1e-3  # one shift for every map
        np.testing.assert_array_equal(
            blobs[name][1][channel != 4], untempered[name][1][channel != 4]
        )
        np.testing.assert_array_equal(blobs[name][0], untempered[name][0])
