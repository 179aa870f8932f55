"""Shape rules and settings of ``Yolov3DetectionOutput`` and ``YoloDetectionOutput`` (YOLO v3 and
v2 Caffe ports: eric612/MobileNet-YOLO's ``yolov3_detection_output_layer.cpp`` and
``yolo_detection_output_layer.cpp``).

Bottoms: ``mask_group_num`` maps ``B x num_box * (5 + C) x S x S`` (square: the fork reads the
side from the width). For map t, cell (row j, column i), box n with anchor ``m = mask[n + t *
groups]`` (``groups = len(mask) / mask_group_num``): centre ``(i + sigmoid(tx)) / S`` and
``(j + sigmoid(ty)) / S``, size ``exp(tw) * biases[2m] / (S * anchors_scale[t])`` and
``exp(th) * biases[2m + 1] / (S * anchors_scale[t])``, class scores ``sigmoid(tc) *
sigmoid(to)``; every (box, class) above ``confidence_threshold`` is a candidate. Candidates of
all maps and images, best first, go through one class-agnostic greedy NMS (a box goes when its
overlap with a kept one is at least ``nms_threshold``). Rows ``[0, class + 1, score, x - w / 2,
y - h / 2, x + w / 2, y + h / 2]`` (the fork writes image 0 for every row); none at all: one
``[i, -1, ...]`` row per image. Top ``1 x 1 x R x 7``, R data-dependent (the shape rule gives
the placeholder ``1 x 1 x 1 x 7``, as the fork's Reshape).

``YoloDetectionOutput`` (v2) reads one map ``1 x num_box * (5 + C) x S x S`` (the fork CHECKs a
batch of 1), or two (the fork's second bottom, MobileNet-YOLO's two-scale v2 heads: the same
decoding with the same anchors on each map, its own S, candidates of the first map first):
box n of cell (j, i) has centre ``((i + sigmoid(tx)) / S, (j + sigmoid(ty)) / S)``, size
``exp(tw) * biases[2n] / S`` and ``exp(th) * biases[2n + 1] / S``, and one candidate: the
first class of highest softmax probability, scored ``sigmoid(to) * probability``, kept at or
above ``confidence_threshold``. The NMS and the rows are v3's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register


@dataclass(frozen=True)
class YoloSettings:
    classes: int
    boxes: int
    threshold: float
    nms: float
    biases: tuple[float, ...]
    scales: tuple[int, ...]
    maps: int
    mask: tuple[int, ...]

    @property
    def groups(self) -> int:
        return len(self.mask) // self.maps

    def anchor(self, t: int, n: int) -> tuple[float, float]:
        m = self.mask[n + t * self.groups]
        return self.biases[2 * m], self.biases[2 * m + 1]


def yolo_settings(p: caffe_pb2.Yolov3DetectionOutputParameter) -> YoloSettings:
    s = YoloSettings(
        classes=int(p.num_classes),
        boxes=int(p.num_box),
        threshold=float(p.confidence_threshold),
        nms=float(p.nms_threshold),
        biases=tuple(float(b) for b in p.biases),
        scales=tuple(int(a) for a in p.anchors_scale),
        maps=int(p.mask_group_num),
        mask=tuple(int(m) for m in p.mask),
    )
    if s.classes < 1 or s.boxes < 1 or s.maps < 1:
        raise ValueError("num_classes, num_box and mask_group_num must be at least 1")
    if len(s.scales) < s.maps or any(a <= 0 for a in s.scales):
        raise ValueError(f"anchors_scale needs {s.maps} positive values, one per map")
    if s.groups < s.boxes:
        raise ValueError(
            f"mask holds {len(s.mask)} anchors for {s.maps} maps of {s.boxes} boxes each"
        )
    if any(2 * m + 1 >= len(s.biases) for m in s.mask):
        raise ValueError(f"a mask entry points past the {len(s.biases) // 2} anchors in biases")
    if not (math.isfinite(s.threshold) and math.isfinite(s.nms)):
        raise ValueError("confidence_threshold and nms_threshold must be numbers")
    return s


def check_maps(s: YoloSettings, inputs: list[Shape]) -> None:
    if len(inputs) != s.maps:
        raise ValueError(f"mask_group_num is {s.maps}, but the layer has {len(inputs)} bottoms")
    for shape in inputs:
        if len(shape) != 4 or shape[2] != shape[3]:
            raise ValueError(f"each map must be B x C x S x S (square), not {list(shape)}")
        if shape[1] != s.boxes * (5 + s.classes):
            raise ValueError(
                f"a map has {shape[1]} channels; num_box x (5 + num_classes) = "
                f"{s.boxes * (5 + s.classes)}"
            )
        if shape[0] != inputs[0][0]:
            raise ValueError("the maps disagree on the batch")


@register("Yolov3DetectionOutput", "shape")
def _yolov3(node: Node, inputs: list[Shape]) -> LayerShapes:
    check_maps(yolo_settings(node.param.yolov3_detection_output_param), inputs)
    return LayerShapes([(1, 1, 1, 7)], [])


def max_rows(node: Node, in_shapes: list[Shape]) -> int:
    """Every (box, class) of every map may survive: an upper bound on the rows."""
    s = yolo_settings(node.param.yolov3_detection_output_param)
    return max(sum(b * h * w * s.boxes * s.classes for b, _, h, w in in_shapes), in_shapes[0][0])


def _no_backward(node: Node, bottom: int) -> str | None:
    return "Yolov3DetectionOutput has no backward"


def objectness(node: Node, maps: list[np.ndarray]) -> tuple[list, list, float, bool, int]:
    """What synth tempers on photos (tools/synth.py): per map, the objectness logits (items,
    boxes, 1, positions) and the class factor they multiply (v3: every class's sigmoid; v2:
    the best softmax probability), the confidence threshold, whether a score equal to it
    counts (v2), and the channels per box (5 + classes, objectness at 4)."""
    v3 = node.param.HasField("yolov3_detection_output_param")
    s = (
        yolo_settings(node.param.yolov3_detection_output_param)
        if v3
        else yolo2_settings(node.param.yolo_detection_output_param)
    )
    logits, factors = [], []
    for x in maps:
        v = x.reshape(x.shape[0], s.boxes, 5 + s.classes, -1).astype(np.float32)
        logits.append(v[:, :, 4:5, :])
        classes = v[:, :, 5:, :]
        if v3:
            factors.append(1.0 / (1.0 + np.exp(-classes)))
        else:
            e = np.exp(classes - classes.max(axis=2, keepdims=True))
            factors.append((e / e.sum(axis=2, keepdims=True)).max(axis=2, keepdims=True))
    return logits, factors, s.threshold, not v3, 5 + s.classes


describe(
    "Yolov3DetectionOutput",
    origin="YOLOv3 Caffe ports (eric612/MobileNet-YOLO)",
    param_message="yolov3_detection_output_param",
    bottoms=(1, None),
    tops=1,
    detections=max_rows,
    objectness=objectness,
    mixes_batch=lambda node, shape: True,
    no_backward=_no_backward,
)


def yolo2_settings(p: caffe_pb2.YoloDetectionOutputParameter) -> YoloSettings:
    """v2's settings in v3's form: one map, anchors in order (mask 0..num_box - 1), scale 1."""
    s = YoloSettings(
        classes=int(p.num_classes),
        boxes=int(p.num_box),
        threshold=float(p.confidence_threshold),
        nms=float(p.nms_threshold),
        biases=tuple(float(b) for b in p.biases),
        scales=(1,),
        maps=1,
        mask=tuple(range(int(p.num_box))),
    )
    if s.classes < 1 or s.boxes < 1:
        raise ValueError("num_classes and num_box must be at least 1")
    if len(s.biases) < 2 * s.boxes:
        raise ValueError(f"biases holds {len(s.biases) // 2} anchors for num_box {s.boxes}")
    if not (math.isfinite(s.threshold) and math.isfinite(s.nms)):
        raise ValueError("confidence_threshold and nms_threshold must be numbers")
    return s


@register("YoloDetectionOutput", "shape")
def _yolo2(node: Node, inputs: list[Shape]) -> LayerShapes:
    if len(inputs) not in (1, 2):
        raise ValueError(f"YoloDetectionOutput takes one or two maps, not {len(inputs)}")
    s = yolo2_settings(node.param.yolo_detection_output_param)
    for shape in inputs:
        check_maps(s, [shape])
    if any(shape[0] != 1 for shape in inputs):
        raise ValueError("YoloDetectionOutput takes a batch of 1 (the fork CHECKs it)")
    return LayerShapes([(1, 1, 1, 7)], [])


def max_rows2(node: Node, in_shapes: list[Shape]) -> int:
    """One candidate per box."""
    s = yolo2_settings(node.param.yolo_detection_output_param)
    return max(sum(h * w * s.boxes for _, _, h, w in in_shapes), 1)


def _no_backward2(node: Node, bottom: int) -> str | None:
    return "YoloDetectionOutput has no backward"


describe(
    "YoloDetectionOutput",
    origin="YOLOv2 Caffe ports (eric612/MobileNet-YOLO)",
    param_message="yolo_detection_output_param",
    bottoms=(1, 2),
    tops=1,
    detections=max_rows2,
    objectness=objectness,
    mixes_batch=lambda node, shape: True,
    no_backward=_no_backward2,
)
