"""Shape rule and settings of ``BoxOutput`` (MS-CNN, zhaoweicai/mscnn's ``box_output_layer.cpp``:
its multi-scale proposal network's output).

Bottoms: one map per scale, ``N x (K + 4) x H x W`` (K class scores, background first, then the
box offsets). Per image, scale j and position (h, w), in that order: the foreground score is
the largest of classes 1..K-1 minus class 0, a candidate from ``fg_thr`` up. Its offsets (times
``bbox_reg_param``'s std, plus its mean, when both are given) decode as: x, y clamped to
``[-1 / field_xyr, 1 / field_xyr]``, then ``x * field_w[j] + (w + 0.5) * downsample_rate[j]``
(y likewise); w, h clamped to ``[log(1 / field_whr), log(field_whr)]``, then ``field_w[j] *
exp(w)``; the corner ``x - w / 2`` (at least 0), the width at most ``W * rate - x``; kept when
width and height reach ``min_size``. Candidates sorted by score (equal scores: the later one
first, as ``std::greater`` on (score, index)), cut to ``max_nms_num``, greedy NMS (a box goes
when its overlap with a kept one is above ``iou_thr``; ``nms_type`` IOU, IOMU: over the smaller
area, IOFU: over the kept box's), cut to ``max_post_nms_num``. Tops: ROIs ``R x 5 x 1 x 1``
``[image, x1, y1, x1 + w, y1 + h]`` (and ``R x 6 x 1 x 1`` with the score); none in the whole
batch: the fork's dummy ROI ``[0, 1, 1, 10, 10]`` (and a zero row). R is data-dependent.

``DecodeBBox`` (the same fork's ``decode_bbox_layer.cpp``, also Cascade R-CNN's): the box
regression of a second stage applied to the ROIs it ran on, the cascade's next proposals.
Bottoms: ``R x 8`` offsets (background's 4, then the object's 4) and ``R x 5`` ROIs ``[image, x1,
y1, x2, y2]``. Per row, with ``bbox_reg_param``'s std and mean when both are given (else 1 and
0): ``pw = x2 - x1 + 1``, ``cx = (x1 + x2) / 2``; ``tx = (dx * std + mean) * pw + cx``, ``tw = pw *
exp(dw * std + mean)``; the box ``[tx - (tw - 1) / 2, .., that + tw - 1]`` (y likewise) from the
object's 4 offsets. Top: ``R x 5 x 1 x 1`` ``[image, x1, y1, x2, y2]``, R as the ROIs'. This is
the TEST forward: in TRAIN the fork also drops boxes with x1 > x2 or y1 > y2 and those whose
third bottom (matched ground truth) overlaps from ``gt_iou_thr``; a third bottom is refused.

``BoxGroupOutput`` (Cascade R-CNN's ``box_group_output_layer.cpp``): its RPN's proposals, from
pairs of bottoms, one pair per ``box_group_param``: probabilities ``(N * G) x C x H x W`` (G = the
group's field sizes, image-major) and offsets ``(N * G) x 4 x H x W``. Per image, pair, field k
and position (in that order): score ``1 - p[channel 0]``, a candidate from ``fg_thr``; offsets
(times std, plus mean, when both are given) clamped as BoxOutput's, ``x = dx * field_w[k] + (w +
0.5) * stride``, width ``field_w[k] * exp(dw)``, box ``[x - width / 2, .., x1 + width - 1]``,
clipped to ``[0, W * stride]``, kept when ``x2 - x1 + 1`` and ``y2 - y1 + 1`` reach ``min_size``.
Sorted by the score as the fork's float holds it (``std::partial_sort`` leaves equal scores in no
set order: here the earlier candidate first), cut to ``max_nms_num``, greedy NMS with the fork's
``JaccardOverlap`` (areas and intersections + 1, ``nms_type`` as BoxOutput's), cut to
``max_post_nms_num``. Tops as BoxOutput's (corners ``[x1, y1, x2, y2]``), the same dummy ROI
when no image has a box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register

MODES = ("IOU", "IOMU", "IOFU")


@dataclass(frozen=True)
class BoxSettings:
    fg_thr: float
    iou_thr: float
    mode: str
    field_h: tuple[int, ...]
    field_w: tuple[int, ...]
    rates: tuple[int, ...]
    whr: float
    xyr: float
    max_nms: int
    max_post: int
    min_size: float
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


def box_settings(layer: caffe_pb2.LayerParameter, maps: int) -> BoxSettings:
    p, reg = layer.box_output_param, layer.bbox_reg_param
    for name in ("field_h", "field_w", "downsample_rate"):
        if len(getattr(p, name)) != maps:
            raise ValueError(f"box_output_param.{name} needs one value per bottom ({maps})")
    if p.nms_type not in MODES:
        raise ValueError(f"nms_type {p.nms_type!r} is not one of {', '.join(MODES)}")
    if p.field_whr <= 0 or p.field_xyr <= 0:
        raise ValueError("field_whr and field_xyr must be positive")
    norm = bool(reg.bbox_mean) and bool(reg.bbox_std)
    if norm and (len(reg.bbox_mean) != 4 or len(reg.bbox_std) != 4):
        raise ValueError("bbox_reg_param needs 4 bbox_mean and 4 bbox_std values")
    return BoxSettings(
        fg_thr=float(np.float32(p.fg_thr)),
        iou_thr=float(np.float32(p.iou_thr)),
        mode=p.nms_type,
        field_h=tuple(int(v) for v in p.field_h),
        field_w=tuple(int(v) for v in p.field_w),
        rates=tuple(int(v) for v in p.downsample_rate),
        whr=float(np.float32(p.field_whr)),
        xyr=float(np.float32(p.field_xyr)),
        max_nms=int(p.max_nms_num),
        max_post=int(p.max_post_nms_num),
        min_size=float(np.float32(p.min_size)),
        mean=tuple(float(v) for v in reg.bbox_mean) if norm else None,
        std=tuple(float(v) for v in reg.bbox_std) if norm else None,
    )


@register("BoxOutput", "shape")
def _box_output(node: Node, inputs: list[Shape]) -> LayerShapes:
    box_settings(node.param, len(inputs))
    if any(len(s) != 4 for s in inputs):
        raise ValueError("BoxOutput reads 4-D maps N x (K + 4) x H x W")
    if len({(s[0], s[1]) for s in inputs}) != 1 or inputs[0][1] < 5:
        raise ValueError("the maps must share the batch and K + 4 channels (K >= 1)")
    return LayerShapes([(1, 5, 1, 1), (1, 6, 1, 1)][: len(node.outputs)], [])


def _no_backward(node: Node, bottom: int) -> str | None:
    return "BoxOutput has no backward"


def _capped(candidates: int, max_nms: int, max_post: int) -> int:
    """Rows per image: the candidates, cut to ``max_nms_num`` then ``max_post_nms_num`` (0: no
    cut), at least the fork's one dummy ROI."""
    for cap in (max_nms, max_post):
        if cap > 0:
            candidates = min(candidates, cap)
    return max(candidates, 1)


def _box_output_rows(node: Node, inputs: list[Shape]) -> int:
    """At most one candidate per position of every scale's map."""
    s = box_settings(node.param, len(inputs))
    return _capped(sum(h * w for _, _, h, w in inputs), s.max_nms, s.max_post)


describe(
    "BoxOutput",
    origin="MS-CNN (zhaoweicai/mscnn)",
    param_message="box_output_param",
    bottoms=(1, None),
    tops=(1, 2),
    varying_rows=True,
    row_bound=_box_output_rows,
    mixes_batch=lambda node, shape: True,
    no_backward=_no_backward,
    validate=lambda layer: None if math.isfinite(layer.box_output_param.iou_thr) else _nan(),
)


def decode_settings(layer: caffe_pb2.LayerParameter) -> tuple[np.ndarray, np.ndarray]:
    """DecodeBBox's (mean, std), 4 values each: bbox_reg_param's when both are given."""
    reg = layer.bbox_reg_param
    if not (reg.bbox_mean and reg.bbox_std):
        return np.zeros(4), np.ones(4)
    if len(reg.bbox_mean) != 4 or len(reg.bbox_std) != 4:
        raise ValueError("bbox_reg_param needs 4 bbox_mean and 4 bbox_std values")
    std = np.array([float(v) for v in reg.bbox_std])
    if not (std > 0).all():
        raise ValueError("bbox_reg_param.bbox_std must be positive")
    return np.array([float(v) for v in reg.bbox_mean]), std


def _per_row(shape: Shape) -> int:
    return math.prod(shape[1:])


@register("DecodeBBox", "shape")
def _decode_bbox(node: Node, inputs: list[Shape]) -> LayerShapes:
    decode_settings(node.param)
    if len(inputs) != 2:
        raise ValueError(
            "a third bottom (matched ground truth) is the fork's TRAIN-only form; "
            "give the offsets and the ROIs"
        )
    offsets, rois = inputs
    if len(offsets) < 2 or len(rois) < 2 or offsets[0] != rois[0]:
        raise ValueError("the offsets and the ROIs need one row each for the same R")
    if offsets[1] != 8 or _per_row(offsets) != 8:
        raise ValueError(f"the offsets must be R x 8 (background's 4, object's 4), got {offsets}")
    if rois[1] != 5 or _per_row(rois) != 5:
        raise ValueError(f"the ROIs must be R x 5 [image, x1, y1, x2, y2], got {rois}")
    return LayerShapes([(rois[0], 5, 1, 1)], [])


describe(
    "DecodeBBox",
    origin="MS-CNN / Cascade R-CNN (zhaoweicai/mscnn, zhaoweicai/cascade-rcnn)",
    bottoms=(2, 3),
    tops=1,
    no_backward=lambda node, bottom: "DecodeBBox has no backward",
    validate=decode_settings,
)


@dataclass(frozen=True)
class GroupSettings:
    fg_thr: float
    iou_thr: float
    mode: str
    fields: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]  # per pair: (field_w, field_h)
    strides: tuple[float, ...]
    xy: float  # offsets x, y clamped to [-xy, xy]
    wh: tuple[float, float]  # offsets w, h clamped to these logs
    max_nms: int
    max_post: int
    min_size: float
    mean: np.ndarray
    std: np.ndarray


def group_settings(layer: caffe_pb2.LayerParameter) -> GroupSettings:
    """BoxGroupOutput's settings, checked as the fork's LayerSetUp does."""
    p = layer.box_group_output_param
    if p.nms_type not in MODES:
        raise ValueError(f"nms_type {p.nms_type!r} is not one of {', '.join(MODES)}")
    if not p.field_whr > 0 or not p.field_xyr > 0:
        raise ValueError("field_whr and field_xyr must be positive")
    if not math.isfinite(p.iou_thr):
        raise ValueError("box_group_output_param.iou_thr must be a number")
    fields = []
    for i, group in enumerate(p.box_group_param):
        if len(group.field_w) != len(group.field_h) or not group.field_w:
            raise ValueError(f"box_group_param {i} needs as many field_w as field_h (at least 1)")
        fields.append((tuple(map(float, group.field_w)), tuple(map(float, group.field_h))))
    mean, std = decode_settings(layer)
    f32 = np.float32
    return GroupSettings(
        fg_thr=float(f32(p.fg_thr)),
        iou_thr=float(f32(p.iou_thr)),
        mode=p.nms_type,
        fields=tuple(fields),
        strides=tuple(float(g.stride) for g in p.box_group_param),
        xy=float(f32(1) / f32(p.field_xyr)),
        wh=(float(np.log(f32(1) / f32(p.field_whr))), float(np.log(f32(p.field_whr)))),
        max_nms=int(p.max_nms_num),
        max_post=int(p.max_post_nms_num),
        min_size=float(f32(p.min_size)),
        mean=mean,
        std=std,
    )


@register("BoxGroupOutput", "shape")
def _box_group_output(node: Node, inputs: list[Shape]) -> LayerShapes:
    s = group_settings(node.param)
    if len(inputs) % 2 or len(inputs) != 2 * len(s.fields):
        raise ValueError(
            f"needs one (probabilities, offsets) pair of bottoms per box_group_param "
            f"({len(s.fields)}), got {len(inputs)} bottoms"
        )
    images = None
    for j, (prob, box) in enumerate(zip(inputs[::2], inputs[1::2])):
        groups = len(s.fields[j][0])
        if len(prob) != 4 or len(box) != 4 or box[1] != 4:
            raise ValueError(f"pair {j}: needs (N * G) x C x H x W and (N * G) x 4 x H x W maps")
        if prob[0] != box[0] or prob[2:] != box[2:] or prob[0] % groups:
            raise ValueError(
                f"pair {j}: the maps must share N * G ({groups} fields per image) and H x W"
            )
        if (images, prob[1]) != (prob[0] // groups, inputs[0][1]) and images is not None:
            raise ValueError("every pair must hold the same images and classes")
        images = prob[0] // groups
    return LayerShapes([(1, 5, 1, 1), (1, 6, 1, 1)][: len(node.outputs)], [])


def _box_group_rows(node: Node, inputs: list[Shape]) -> int:
    """At most one candidate per field and position of every pair's maps."""
    s = group_settings(node.param)
    fields = [len(w) for w, _ in s.fields]
    candidates = sum(g * h * w for g, (_, _, h, w) in zip(fields, inputs[::2]))
    return _capped(candidates, s.max_nms, s.max_post)


describe(
    "BoxGroupOutput",
    origin="Cascade R-CNN (zhaoweicai/cascade-rcnn)",
    param_message="box_group_output_param",
    bottoms=(1, None),
    tops=(1, 2),
    varying_rows=True,
    row_bound=_box_group_rows,
    mixes_batch=lambda node, shape: True,
    no_backward=lambda node, bottom: "BoxGroupOutput has no backward",
    validate=group_settings,
)


def _nan() -> None:
    raise ValueError("box_output_param.iou_thr must be a number")
