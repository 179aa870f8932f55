"""BoxOutput in float64 (MS-CNN's ``box_output_layer.cpp`` and ``BoxIOU``; see
caffe_compat.shapes.box_output): per image, candidates of every scale decoded at once, the
fork's (score, index) order, then its greedy ``nmsMax`` loop over kept boxes. DecodeBBox: the
fork's ``DecodeBBoxesWithPrior`` on every row at once, its TEST forward. BoxGroupOutput: per
image, every pair and field decoded at once, a stable descending sort, then the greedy loop of
Cascade R-CNN's ``ApplyNMS`` with its ``JaccardOverlap``."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.box_output import (
    BoxSettings,
    GroupSettings,
    box_settings,
    decode_settings,
    group_settings,
)
from ._base import Arrays, LayerContext


def candidates(s: BoxSettings, maps: Arrays, image: int) -> np.ndarray:
    """(M, 5) ``[x, y, w, h, score]`` of one image in the fork's loop order."""
    rows = []
    for j, x in enumerate(maps):
        _, c, height, width = x.shape
        k = c - 4
        v = x[image].reshape(c, -1)
        fg = (v[1:k].max(axis=0) if k > 1 else np.full(v.shape[1], -np.inf)) - v[0]
        bx, by, bw, bh = (v[k + a].copy() for a in range(4))
        if s.mean is not None and s.std is not None:
            bx, by = bx * s.std[0] + s.mean[0], by * s.std[1] + s.mean[1]
            bw, bh = bw * s.std[2] + s.mean[2], bh * s.std[3] + s.mean[3]
        rows_, cols = np.divmod(np.arange(height * width), width)
        rate = s.rates[j]
        bx = np.clip(bx, -1 / s.xyr, 1 / s.xyr) * s.field_w[j] + (cols + 0.5) * rate
        by = np.clip(by, -1 / s.xyr, 1 / s.xyr) * s.field_h[j] + (rows_ + 0.5) * rate
        low, high = np.log(1 / s.whr), np.log(s.whr)
        bw = s.field_w[j] * np.exp(np.clip(bw, low, high))
        bh = s.field_h[j] * np.exp(np.clip(bh, low, high))
        bx, by = np.maximum(bx - bw / 2, 0), np.maximum(by - bh / 2, 0)
        bw, bh = np.minimum(bw, width * rate - bx), np.minimum(bh, height * rate - by)
        keep = (fg >= s.fg_thr) & (bw >= s.min_size) & (bh >= s.min_size)
        rows.append(np.stack([bx, by, bw, bh, fg], axis=1)[keep])
    return np.concatenate(rows)


def box_iou(box: np.ndarray, others: np.ndarray, mode: str) -> np.ndarray:
    """BoxIOU of one (x, y, w, h) box with many: 0 for empty boxes or no overlap."""
    x1, y1, w1, h1 = box
    x2, y2, w2, h2 = others.T
    width = np.minimum(x1 + w1, x2 + w2) - np.maximum(x1, x2)
    height = np.minimum(y1 + h1, y2 + h2) - np.maximum(y1, y2)
    over = np.where((width <= 0) | (height <= 0), 0.0, width * height)
    if mode == "IOMU":
        union = np.minimum(w1 * h1, w2 * h2)
    elif mode == "IOFU":
        union = np.full(len(others), w1 * h1)
    else:
        union = w1 * h1 + w2 * h2 - over
    empty = (w1 <= 0) | (h1 <= 0) | (w2 <= 0) | (h2 <= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(empty, 0.0, over / union)


def nms(boxes: np.ndarray, threshold: float, mode: str) -> list[int]:
    order, keep = np.arange(len(boxes)), []
    while order.size:
        first, rest = order[0], order[1:]
        keep.append(int(first))
        order = rest[~(box_iou(boxes[first], boxes[rest], mode) > threshold)]
    return keep


def propose(s: BoxSettings, maps: Arrays) -> np.ndarray:
    """(R, 6) ``[image, x1, y1, x2, y2, score]`` over the batch."""
    found = []
    for image in range(maps[0].shape[0]):
        boxes = candidates(s, maps, image)
        order = np.lexsort((-np.arange(len(boxes)), -boxes[:, 4]))  # std::greater on pairs
        boxes = boxes[order]
        if s.max_nms > 0:
            boxes = boxes[: s.max_nms]
        boxes = boxes[nms(boxes[:, :4], s.iou_thr, s.mode)]
        if s.max_post > 0:
            boxes = boxes[: s.max_post]
        x, y, w, h, score = boxes.T
        found.append(np.stack([np.full(len(x), image), x, y, x + w, y + h, score], axis=1))
    return np.concatenate(found)


@register("BoxOutput", "reference")
def _box_output(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    rows = propose(box_settings(node.param, len(inputs)), inputs)
    if not len(rows):
        rois, scored = np.array([[0.0, 1, 1, 10, 10]]), np.zeros((1, 6))
    else:
        rois, scored = rows[:, :5], rows
    tops = [rois.reshape(-1, 5, 1, 1), scored.reshape(-1, 6, 1, 1)]
    return tops[: len(node.outputs)]


def decode_boxes(offsets: np.ndarray, rois: np.ndarray, mean, std) -> np.ndarray:
    """(R, 4) ``[x1, y1, x2, y2]``: the object's offsets (columns 4..7) applied to the ROIs."""
    x1, y1, x2, y2 = (rois[:, a] for a in range(1, 5))
    pw, ph = x2 - x1 + 1, y2 - y1 + 1
    d = offsets[:, 4:8] * std + mean
    with np.errstate(over="ignore"):
        tw, th = pw * np.exp(d[:, 2]), ph * np.exp(d[:, 3])
    tx = d[:, 0] * pw + 0.5 * (x1 + x2) - (tw - 1) / 2
    ty = d[:, 1] * ph + 0.5 * (y1 + y2) - (th - 1) / 2
    return np.stack([tx, ty, tx + tw - 1, ty + th - 1], axis=1)


@register("DecodeBBox", "reference")
def _decode_bbox(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    mean, std = decode_settings(node.param)
    offsets, rois = (x.reshape(len(x), -1) for x in inputs[:2])
    boxes = decode_boxes(offsets, rois, mean, std)
    return [np.concatenate([rois[:, :1], boxes], axis=1).reshape(-1, 5, 1, 1)]


def group_candidates(s: GroupSettings, maps: Arrays, image: int) -> np.ndarray:
    """(M, 5) ``[x1, y1, x2, y2, score]`` of one image in the fork's (pair, field, position)
    order, before the score and size tests (``keep`` column 5)."""
    rows = []
    for j, (prob, box) in enumerate(zip(maps[::2], maps[1::2])):
        (fw, fh), stride = s.fields[j], s.strides[j]
        groups, (height, width) = len(fw), prob.shape[2:]
        cells = height * width
        score = 1 - prob[image * groups : (image + 1) * groups, 0].reshape(groups, cells)
        # the fork's score is a float: probabilities within 6e-8 of 0 all score 1.0 and tie
        # there (a float64 score would order them by noise no float32 run can see)
        score = score.astype(np.float32).astype(np.float64)
        d = box[image * groups : (image + 1) * groups].reshape(groups, 4, cells)
        d = d * s.std[None, :, None] + s.mean[None, :, None]
        dx, dy = (np.clip(d[:, a], -s.xy, s.xy) for a in (0, 1))
        dw, dh = (np.clip(d[:, a], *s.wh) for a in (2, 3))
        rows_, cols = np.divmod(np.arange(cells), width)
        fw_, fh_ = np.array(fw)[:, None], np.array(fh)[:, None]
        bw, bh = fw_ * np.exp(dw), fh_ * np.exp(dh)
        x1 = dx * fw_ + (cols + 0.5) * stride - bw / 2
        y1 = dy * fh_ + (rows_ + 0.5) * stride - bh / 2
        x2, y2 = x1 + bw - 1, y1 + bh - 1
        x1, y1 = np.maximum(x1, 0), np.maximum(y1, 0)
        x2, y2 = np.minimum(x2, width * stride), np.minimum(y2, height * stride)
        keep = (score >= s.fg_thr) & (x2 - x1 + 1 >= s.min_size) & (y2 - y1 + 1 >= s.min_size)
        rows.append(np.stack([x1, y1, x2, y2, score, keep], axis=-1).reshape(-1, 6))
    return np.concatenate(rows)


def jaccard(box: np.ndarray, others: np.ndarray, mode: str) -> np.ndarray:
    """Cascade R-CNN's JaccardOverlap of one ``[x1, y1, x2, y2]`` box with many (+1 sizes)."""
    ax1, ay1, ax2, ay2 = box
    bx1, by1, bx2, by2 = others.T
    ix1, iy1 = np.maximum(ax1, bx1), np.maximum(ay1, by1)
    ix2, iy2 = np.minimum(ax2, bx2), np.minimum(ay2, by2)
    inter = np.where((ix1 > ix2) | (iy1 >= iy2), 0.0, (ix2 - ix1 + 1) * (iy2 - iy1 + 1))
    first = 0.0 if ax2 < ax1 or ay2 < ay1 else (ax2 - ax1 + 1) * (ay2 - ay1 + 1)
    second = np.where((bx2 < bx1) | (by2 < by1), 0.0, (bx2 - bx1 + 1) * (by2 - by1 + 1))
    if mode == "IOMU":
        union = np.minimum(first, second)
    elif mode == "IOFU":
        union = np.full(len(others), first)
    else:
        union = first + second - inter
    invalid = (ax2 < ax1) | (ay2 < ay1) | (bx2 < bx1) | (by2 < by1) | (union <= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(invalid, 0.0, inter / np.where(union > 0, union, 1))


def group_propose(s: GroupSettings, maps: Arrays) -> np.ndarray:
    """(R, 6) ``[image, x1, y1, x2, y2, score]`` over the batch."""
    found = []
    for image in range(maps[0].shape[0] // len(s.fields[0][0])):
        boxes = group_candidates(s, maps, image)
        boxes = boxes[boxes[:, 5] > 0]
        boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
        if s.max_nms > 0:
            boxes = boxes[: s.max_nms]
        order, keep = np.arange(len(boxes)), []
        while order.size:
            first, rest = order[0], order[1:]
            keep.append(int(first))
            order = rest[~(jaccard(boxes[first, :4], boxes[rest, :4], s.mode) > s.iou_thr)]
        boxes = boxes[keep]
        if s.max_post > 0:
            boxes = boxes[: s.max_post]
        found.append(np.concatenate([np.full((len(boxes), 1), image), boxes[:, :5]], axis=1))
    return np.concatenate(found)


@register("BoxGroupOutput", "reference")
def _box_group_output(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    rows = group_propose(group_settings(node.param), inputs)
    if not len(rows):
        rois, scored = np.array([[0.0, 1, 1, 10, 10]]), np.zeros((1, 6))
    else:
        rois, scored = rows[:, :5], rows
    tops = [rois.reshape(-1, 5, 1, 1), scored.reshape(-1, 6, 1, 1)]
    return tops[: len(node.outputs)]
