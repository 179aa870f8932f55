"""Yolov3DetectionOutput and YoloDetectionOutput in float64 (eric612/MobileNet-YOLO's
``Forward_cpu``; see caffe_compat.shapes.yolo): candidates gathered in the fork's loop order
(map, image, cell, box, class), a stable sort by score (the fork's std::sort leaves ties
unordered), then the fork's greedy NMS loop over kept boxes, overlaps from centre and size as
its ``box_iou``."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.yolo import YoloSettings, yolo2_settings, yolo_settings
from ._base import Arrays, LayerContext


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def candidates(s: YoloSettings, maps: Arrays) -> np.ndarray:
    """(K, 6) rows ``[class, score, x, y, w, h]`` in the fork's loop order."""
    rows = []
    for t, x in enumerate(maps):
        b, _, side, _ = x.shape
        v = x.reshape(b, s.boxes, 5 + s.classes, side * side).transpose(0, 3, 1, 2)  # b, cell, n, k
        cell = np.arange(side * side)
        i, j = (cell % side)[None, :, None], (cell // side)[None, :, None]
        anchors = np.array([s.anchor(t, n) for n in range(s.boxes)])  # (n, 2)
        size = side * s.scales[t]
        cx = (i + _sigmoid(v[..., 0])) / side
        cy = (j + _sigmoid(v[..., 1])) / side
        w = np.exp(v[..., 2]) * anchors[:, 0] / size
        h = np.exp(v[..., 3]) * anchors[:, 1] / size
        score = _sigmoid(v[..., 5:]) * _sigmoid(v[..., 4])[..., None]  # (b, cell, n, C)
        boxes = np.stack([cx, cy, w, h], -1)[..., None, :]  # (b, cell, n, 1, 4)
        boxes = np.broadcast_to(boxes, (*score.shape, 4))
        label = np.broadcast_to(np.arange(s.classes), score.shape)
        keep = score > s.threshold
        rows.append(np.column_stack([label[keep], score[keep], boxes[keep]]))
    return np.concatenate(rows) if rows else np.zeros((0, 6))


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    def overlap(c1, s1, c2, s2):
        return np.minimum(c1 + s1 / 2, c2 + s2 / 2) - np.maximum(c1 - s1 / 2, c2 - s2 / 2)

    w = overlap(box[0], box[2], others[:, 0], others[:, 2])
    h = overlap(box[1], box[3], others[:, 1], others[:, 3])
    inter = np.where((w < 0) | (h < 0), 0.0, w * h)
    return inter / (box[2] * box[3] + others[:, 2] * others[:, 3] - inter)


def nms(boxes: np.ndarray, threshold: float) -> list[int]:
    """The fork's ApplyNms on boxes in score order: a box goes at overlap >= threshold."""
    order, keep = np.arange(len(boxes)), []
    while order.size:
        first, rest = order[0], order[1:]
        keep.append(int(first))
        order = rest[_iou(boxes[first], boxes[rest]) < threshold]
    return keep


def finish(found: np.ndarray, threshold: float, batch: int) -> np.ndarray:
    """Candidates ``[class, score, x, y, w, h]`` in loop order -> the fork's top rows."""
    found = found[np.argsort(-found[:, 1], kind="stable")]
    kept = found[nms(found[:, 2:], threshold)]
    if not len(kept):
        rows = np.full((batch, 7), -1.0)
        rows[:, 0] = np.arange(batch)
        return rows.reshape(1, 1, batch, 7)
    x, y, w, h = kept[:, 2], kept[:, 3], kept[:, 4], kept[:, 5]
    rows = np.column_stack(
        [
            np.zeros(len(kept)),
            kept[:, 0] + 1,
            kept[:, 1],
            x - w / 2,
            y - h / 2,
            x + w / 2,
            y + h / 2,
        ]
    )
    return rows.reshape(1, 1, -1, 7)


@register("Yolov3DetectionOutput", "reference")
def _yolov3(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    s = yolo_settings(node.param.yolov3_detection_output_param)
    return [finish(candidates(s, inputs), s.nms, inputs[-1].shape[0])]


def candidates2(s: YoloSettings, x: np.ndarray) -> np.ndarray:
    """v2's one candidate per box: the first most probable class (softmax), in loop order."""
    b, _, side, _ = x.shape
    v = x.reshape(b, s.boxes, 5 + s.classes, side * side).transpose(0, 3, 1, 2)  # b, cell, n, k
    cell = np.arange(side * side)
    i, j = (cell % side)[None, :, None], (cell // side)[None, :, None]
    anchors = np.array([s.anchor(0, n) for n in range(s.boxes)])
    logits = v[..., 5:]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    prob = e / e.sum(axis=-1, keepdims=True)
    label = prob.argmax(axis=-1)
    score = _sigmoid(v[..., 4]) * prob.max(axis=-1)
    cx = (i + _sigmoid(v[..., 0])) / side
    cy = (j + _sigmoid(v[..., 1])) / side
    w = np.exp(v[..., 2]) * anchors[:, 0] / side
    h = np.exp(v[..., 3]) * anchors[:, 1] / side
    keep = score >= s.threshold
    return np.column_stack([label[keep], score[keep], cx[keep], cy[keep], w[keep], h[keep]])


@register("YoloDetectionOutput", "reference")
def _yolo2(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    s = yolo2_settings(node.param.yolo_detection_output_param)
    found = np.concatenate([candidates2(s, x) for x in inputs])  # the first map's first
    return [finish(found, s.nms, inputs[0].shape[0])]
