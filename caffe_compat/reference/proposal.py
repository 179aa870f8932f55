"""Proposal in float64: a transcription of py-faster-rcnn's ``proposal_layer.py`` (TEST phase),
``bbox_transform_inv``, ``clip_boxes`` and ``py_cpu_nms`` (see caffe_compat.shapes.proposal).

The NMS is the original's loop over kept boxes (at most ``post_nms_topn`` of them, each step
vectorised over the rest): the judge stays the fork's own algorithm; the PyTorch and ONNX back
ends use batched forms. Equal scores are ordered by their position (y, x, anchor), first first.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.proposal import proposal_settings
from ._base import Arrays, LayerContext


def decode(anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """``bbox_transform_inv``: centre/size deltas on +1 anchor sizes."""
    widths = anchors[:, 2] - anchors[:, 0] + 1.0
    heights = anchors[:, 3] - anchors[:, 1] + 1.0
    cx = anchors[:, 0] + 0.5 * widths
    cy = anchors[:, 1] + 0.5 * heights
    px = deltas[:, 0] * widths + cx
    py = deltas[:, 1] * heights + cy
    pw = np.exp(deltas[:, 2]) * widths
    ph = np.exp(deltas[:, 3]) * heights
    return np.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], axis=1)


def greedy_nms(boxes: np.ndarray, thresh: float) -> list[int]:
    """``py_cpu_nms`` on boxes already in score order: indices kept."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.arange(len(boxes))
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= thresh]
    return keep


def propose(node: Node, scores: np.ndarray, deltas: np.ndarray, info: np.ndarray):
    """(rois (R, 5), scores (R, 1)) for one image."""
    s = proposal_settings(node.param.proposal_param)
    anchors = s.anchors
    a = len(anchors)
    fg = scores[0, a:]  # (A, H, W)
    h, w = fg.shape[1:]
    sx, sy = np.meshgrid(np.arange(w) * s.feat_stride, np.arange(h) * s.feat_stride)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)
    every = (anchors[None] + shifts[:, None]).reshape(-1, 4)  # (H * W * A, 4)
    d = deltas[0].reshape(a, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4)
    score = fg.transpose(1, 2, 0).reshape(-1)
    info = info.reshape(-1)
    boxes = decode(every, d)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, info[1] - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, info[0] - 1)
    least = s.min_size * info[2]
    big = ((boxes[:, 2] - boxes[:, 0] + 1) >= least) & ((boxes[:, 3] - boxes[:, 1] + 1) >= least)
    boxes, score = boxes[big], score[big]
    order = np.argsort(-score, kind="stable")
    if s.pre_nms_topn > 0:
        order = order[: s.pre_nms_topn]
    boxes, score = boxes[order], score[order]
    keep = greedy_nms(boxes, s.nms_thresh) if s.nms_thresh < 1 else list(range(len(boxes)))
    if s.post_nms_topn > 0:
        keep = keep[: s.post_nms_topn]
    rois = np.hstack([np.zeros((len(keep), 1)), boxes[keep]])
    return rois, score[keep].reshape(-1, 1)


@register("Proposal", "reference")
def _proposal(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    scores, deltas, info = inputs
    if scores.shape[0] != 1:
        raise ValueError("Only single item batches are supported (py-faster-rcnn's proposal layer)")
    rois, kept = propose(node, scores, deltas, info)
    return [rois, kept][: len(node.outputs)]
