"""Yolov3DetectionOutput in the float64 reference: one cell decoded by hand from the fork's
get_region_box2 and class_score lines, and its class-agnostic NMS at the threshold."""

from __future__ import annotations

import math

import numpy as np


def layer(thr: float = 0.5, nms: float = 0.45) -> str:
    return (
        'layer { name: "d" type: "Yolov3DetectionOutput" bottom: "m" top: "d" '
        f"yolov3_detection_output_param {{ num_classes: 1 num_box: 1 confidence_threshold: {thr} "
        f"nms_threshold: {nms} biases: 8 biases: 16 mask: 0 anchors_scale: 4 mask_group_num: 1 }} }}"
    )


def test_one_cell_by_hand(run_layers):
    """2 x 2 map, one box, one class; only cell (row 1, column 0) scores: tx = ty = 0 (centre
    at 0.5 of the cell), tw = ln 2 and th = 0 on anchor 8 x 16 over S * anchors_scale = 8:
    w = 2 * 8 / 8 = 2, h = 16 / 8 = 2; score sigmoid(4) * sigmoid(4)."""
    m = np.full((1, 6, 2, 2), -10.0)
    m[0, :, 1, 0] = [0.0, 0.0, math.log(2.0), 0.0, 4.0, 4.0]
    out = run_layers(layer(), m=m)["d"]
    s = 1 / (1 + math.exp(-4.0))
    cx, cy = (0 + 0.5) / 2, (1 + 0.5) / 2
    np.testing.assert_allclose(out.reshape(-1), [0, 1, s * s, cx - 1, cy - 1, cx + 1, cy + 1])


def test_nms_threshold_around_the_overlap(run_layers):
    """Two boxes of the same size, centres 0.5 apart: IoU 1/3 (worked below). Under it the
    weaker goes; above it both stay (classes do not matter: the NMS is class-agnostic)."""
    m = np.full((1, 6, 2, 2), -10.0)
    m[0, :, 0, 0] = [0.0, 0.0, 0.0, 0.0, 5.0, 5.0]  # centre (0.25, 0.25), stronger
    m[0, :, 0, 1] = [0.0, 0.0, 0.0, 0.0, 4.0, 4.0]  # centre (0.75, 0.25)
    # w = exp(0) * 8 / 8 = 1, h = 16 / 8 = 2
    # x: [-0.25, 0.75] and [0.25, 1.25] overlap by 0.5;
    # y: identical (h 2): 2. inter 1, union 2 + 2 - 1 = 3: IoU 1/3
    assert run_layers(layer(nms=0.33), m=m)["d"].shape == (1, 1, 1, 7)
    assert run_layers(layer(nms=0.34), m=m)["d"].shape == (1, 1, 2, 7)


def test_v2_one_cell_by_hand(run_layers):
    """YoloDetectionOutput: class logits [1, 3] -> softmax [1 / (1 + e^2), e^2 / (1 + e^2)]: class
    1 (label 2), score sigmoid(2) * e^2 / (1 + e^2) = sigmoid(2)^2; box at cell (0, 1) of 2 x 2
    with tw = th = 0 on anchor (1, 2): w = 1 / 2, h = 2 / 2."""
    m = np.full((1, 7, 2, 2), -10.0)
    m[0, :, 0, 1] = [0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 3.0]
    m[0, 5:, :, :] = 0.0  # equal logits elsewhere: probability 1/2, score tiny (obj -10)
    m[0, 5:, 0, 1] = [1.0, 3.0]
    out = run_layers(
        'layer { name: "d" type: "YoloDetectionOutput" bottom: "m" top: "d" '
        "yolo_detection_output_param { num_classes: 2 num_box: 1 confidence_threshold: 0.1 "
        "biases: 1 biases: 2 } }",
        m=m,
    )["d"]
    s = 1 / (1 + math.exp(-2.0))
    cx, cy = (1 + 0.5) / 2, (0 + 0.5) / 2
    np.testing.assert_allclose(
        out.reshape(-1), [0, 2, s * s, cx - 0.25, cy - 0.5, cx + 0.25, cy + 0.5]
    )


def test_v2_second_map_by_hand(run_layers):
    """The fork's second bottom: the 1 x 1 map and a 2 x 2 map decoded alike (same anchor, own
    side); each holds one box, far apart, so both are kept, the higher score first (the second
    map's, sigmoid(3) * 1/2 against sigmoid(1) * 1/2)."""
    a = np.zeros((1, 7, 1, 1))
    a[0, 4] = 1.0  # objectness; equal class logits: probability 1/2, the first class
    b = np.full((1, 7, 2, 2), -10.0)
    b[0, 5:] = 0.0
    b[0, :, 1, 1] = [0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 5.0]  # class 1 of probability ~1
    out = run_layers(
        'layer { name: "d" type: "YoloDetectionOutput" bottom: "a" bottom: "b" top: "d" '
        "yolo_detection_output_param { num_classes: 2 num_box: 1 confidence_threshold: 0.3 "
        "nms_threshold: 0.45 biases: 0.5 biases: 0.5 } }",
        a=a,
        b=b,
    )["d"].reshape(-1, 7)

    def sig(v):
        return 1 / (1 + math.exp(-v))

    p = 1 / (1 + math.exp(-5.0))  # softmax of [0, 5], class 1
    # second map: cell (1, 1) of 2: centre 0.75, size 0.5 / 2 = 0.25
    first = [0, 2, sig(3) * p, 0.75 - 0.125, 0.75 - 0.125, 0.75 + 0.125, 0.75 + 0.125]
    # first map: cell (0, 0) of 1: centre 0.5, size 0.5
    second = [0, 1, sig(1) * 0.5, 0.25, 0.25, 0.75, 0.75]
    np.testing.assert_allclose(out, [first, second], rtol=1e-12)
