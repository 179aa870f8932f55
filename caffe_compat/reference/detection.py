"""The SSD fork's layers (W. Liu's Caffe, branch ``ssd``): Permute, Normalize, PriorBox and
DetectionOutput, the last transcribed from ``detection_output_layer.cpp`` and ``bbox_util.cpp``.

DetectionOutput per image: decode every prior's box (CORNER, CENTER_SIZE or CORNER_SIZE, with
the prior blob's variances unless ``variance_encoded_in_target``); per foreground class take
the scores strictly above ``confidence_threshold``, stable-sorted by score and cut to ``top_k``;
greedy NMS keeps a candidate when its IoU with every kept box is at most the threshold, which is
multiplied by ``eta`` (in float32, as Caffe) after each kept box while it is above 0.5. When more
than ``keep_top_k`` boxes survive over all classes the best scores are kept (Caffe's
``std::sort`` leaves exact ties unordered; here the lower class, then the NMS order, wins).
Rows ``[image, label, score, xmin, ymin, xmax, ymax]`` go out by image, label, then kept order;
with no detection in the whole batch, one row ``[i, -1, ...]`` per image.

Backward (the fork's): Permute permutes the diff back; PriorBox sends nothing; DetectionOutput has
none. Normalize's is the fork's formula, ``scale / norm * (g - x * (x . g) / norm^2)``, which is
the derivative only where the scale is the same for every channel (the fork leaves the scales out
of the dot product), and its scale diff is ``sum(top * g) / scale``.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import register
from ..shapes.detection import (
    HAPPYNEAR_EPS,
    ROW,
    DetectionSettings,
    detection_settings,
    happynear_normalize,
    num_priors,
    permute_order,
    prior_boxes,
)
from ._base import Arrays, BackwardContext, Grads, LayerContext, no_grads

Code = caffe_pb2.PriorBoxParameter


@register("Permute", "reference")
def _permute(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    return [np.ascontiguousarray(x.transpose(permute_order(node.param.permute_param, x.ndim)))]


def _happynear_norm(node: Node, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """happynear's Normalize as N x C x (H * W): the bottom's view and its norm per position,
    ``sqrt(sum_c x^2 + 1e-6)`` for "L2", ``sum_c |x| + 1e-6`` for "L1"."""
    view = x.reshape(x.shape[0], x.shape[1], -1)
    if node.param.normalize_param.normalize_type == "L1":
        return view, np.abs(view).sum(axis=1, keepdims=True) + HAPPYNEAR_EPS
    return view, np.sqrt(np.square(view).sum(axis=1, keepdims=True) + HAPPYNEAR_EPS)


@register("Normalize", "reference")
def _normalize(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    """L2 norm per image (``across_spatial``) or per position over channels; eps is added to
    the sum of squares, then each channel is multiplied by its scale (SSD). happynear's: the
    bottom over its norm per position, and that norm as the optional second top."""
    (x,) = inputs
    if happynear_normalize(node.param):
        view, norm = _happynear_norm(node, x)
        shape = ctx.out_shapes[0]  # N x C x H x W, also for a 2-D bottom
        tops = [(view / norm).reshape(shape), norm.reshape(shape[0], 1, *shape[2:])]
        return tops[: len(node.outputs)]
    p = node.param.norm_param
    view = x.reshape(x.shape[0], x.shape[1], -1)  # Caffe's num x channels x (height * width)
    axes = (1, 2) if p.across_spatial else (1,)
    norm = np.sqrt(np.square(view).sum(axis=axes, keepdims=True) + float(p.eps))
    scale = ctx.blobs[0]
    scale = scale.reshape(1, -1, 1) if scale.ndim else scale
    return [(view / norm * scale).reshape(x.shape)]


@register("PriorBox", "reference")
def _prior_box(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    """Boxes and variances depend only on the bottoms' sizes (computed by the shared rule in
    Caffe's float32 arithmetic, as Caffe stores them)."""
    return [prior_boxes(node.param.prior_box_param, list(ctx.in_shapes)).astype(np.float64)]


def decode(loc: np.ndarray, prior: np.ndarray, variance: np.ndarray, s: DetectionSettings):
    """bbox_util's DecodeBBox for (..., P, 4) predictions against (P, 4) priors."""
    if s.variance_encoded_in_target:
        variance = np.ones_like(variance)
    if s.code_type == Code.CORNER:
        return prior + variance * loc
    width = prior[:, 2] - prior[:, 0]
    height = prior[:, 3] - prior[:, 1]
    if not ((width > 0).all() and (height > 0).all()):
        raise ValueError("a prior box has no positive width and height (Caffe aborts)")
    size = np.stack([width, height, width, height], axis=-1)
    if s.code_type == Code.CORNER_SIZE:
        return prior + variance * loc * size
    centre_x = (prior[:, 0] + prior[:, 2]) / 2
    centre_y = (prior[:, 1] + prior[:, 3]) / 2
    cx = variance[:, 0] * loc[..., 0] * width + centre_x
    cy = variance[:, 1] * loc[..., 1] * height + centre_y
    w = np.exp(variance[:, 2] * loc[..., 2]) * width
    h = np.exp(variance[:, 3] * loc[..., 3]) * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def box_size(boxes: np.ndarray) -> np.ndarray:
    """BBoxSize: 0 for a box with xmax < xmin or ymax < ymin."""
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return np.where((w < 0) | (h < 0), 0.0, w * h)


def overlap(boxes: np.ndarray, sizes: np.ndarray, box: np.ndarray, size: float) -> np.ndarray:
    """JaccardOverlap of each of ``boxes`` with ``box``; boxes that only touch do not overlap."""
    apart = (
        (box[0] > boxes[:, 2])
        | (box[2] < boxes[:, 0])
        | (box[1] > boxes[:, 3])
        | (box[3] < boxes[:, 1])
    )
    w = np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0])
    h = np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1])
    inter = w * h
    real = ~apart & (w > 0) & (h > 0)
    union = np.where(real, sizes + size - inter, 1.0)
    return np.where(real, inter / union, 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, s: DetectionSettings) -> np.ndarray:
    """ApplyNMSFast: prior indices kept for one class of one image, in kept order.

    Exact and without a loop per candidate: the threshold only falls, so a candidate whose
    largest IoU with the boxes kept so far exceeds the current threshold is rejected whenever
    it is reached; the next kept box is the first one that does not."""
    candidates = np.flatnonzero(scores > s.confidence_threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if s.top_k > -1:
        order = order[: s.top_k]
    sizes = box_size(boxes[order])
    worst = np.zeros(len(order))  # largest IoU with any kept box
    threshold, eta = np.float32(s.nms_threshold), np.float32(s.eta)
    kept: list[int] = []
    start = 0
    while start < len(order):
        fine = np.flatnonzero(worst[start:] <= threshold)
        if not fine.size:
            break
        pos = start + int(fine[0])
        kept.append(pos)
        later = slice(pos + 1, None)
        found = overlap(boxes[order[later]], sizes[later], boxes[order[pos]], sizes[pos])
        worst[later] = np.maximum(worst[later], found)
        if s.eta < 1 and threshold > 0.5:
            threshold = np.float32(threshold * eta)
        start = pos + 1
    return order[kept]


def detect(loc: np.ndarray, conf: np.ndarray, prior: np.ndarray, s: DetectionSettings):
    """(R, 7) rows for a batch, R >= 1 (placeholders when nothing is kept)."""
    batch = loc.shape[0]
    priors = num_priors(prior.shape)
    flat = prior.reshape(-1)
    prior_box = flat[: priors * 4].reshape(priors, 4)
    variance = flat[priors * 4 : priors * 8].reshape(priors, 4)
    loc = loc.reshape(batch, priors, s.num_loc_classes, 4).transpose(0, 2, 1, 3)
    conf = conf.reshape(batch, priors, s.num_classes)
    boxes = decode(loc, prior_box, variance, s)  # (batch, loc classes, P, 4)
    rows = []
    for image in range(batch):
        labels, kept = [], []
        for label in [] if s.never_detects else s.foreground:
            index = nms(boxes[image, 0 if s.share_location else label], conf[image, :, label], s)
            labels.append(np.full(len(index), label))
            kept.append(index)
        label = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        index = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
        score = conf[image, index, label]
        if s.keep_top_k > -1 and len(index) > s.keep_top_k:
            best = np.argsort(-score, kind="stable")[: s.keep_top_k]  # in score order
            best = best[np.argsort(label[best], kind="stable")]  # then grouped by label
            label, index, score = label[best], index[best], score[best]
        box = boxes[image, 0 if s.share_location else label, index]
        rows.append(np.column_stack([np.full(len(index), image), label, score, box]))
    found = np.concatenate(rows) if rows else np.zeros((0, ROW))
    if not len(found):
        found = np.full((batch, ROW), -1.0)
        found[:, 0] = np.arange(batch)
    return found


@register("DetectionOutput", "reference")
def _detection_output(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    s = detection_settings(node.param.detection_output_param)
    rows = detect(inputs[0], inputs[1], inputs[2], s)
    return [rows.reshape(1, 1, -1, ROW)]


# --- backward --------------------------------------------------------------------------------


@register("Permute", "reference_backward")
def _permute_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    order = permute_order(node.param.permute_param, inputs[0].ndim)
    return [np.ascontiguousarray(top_diffs[0].transpose(np.argsort(order)))], []


@register("PriorBox", "reference_backward")
def _prior_box_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    return no_grads(inputs, ctx)


@register("Normalize", "reference_backward")
def _normalize_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    if happynear_normalize(node.param):
        return _happynear_backward(node, inputs, top_diffs, ctx)
    (x,), (g,), (y,) = inputs, top_diffs, ctx.outputs
    p = node.param.norm_param
    shape = (x.shape[0], x.shape[1], -1)
    view, diff, top = x.reshape(shape), g.reshape(shape), y.reshape(shape)
    axes = (1, 2) if p.across_spatial else (1,)
    norm = np.sqrt(np.square(view).sum(axis=axes, keepdims=True) + float(p.eps))
    scale = ctx.blobs[0]
    shared = p.channel_shared
    per_channel = scale.reshape(1, -1, 1) if not shared else scale.reshape(-1)[0]
    if shared:
        scale_diff = np.array((top * diff).sum() / scale.reshape(-1)[0]).reshape(scale.shape)
    else:
        scale_diff = ((top * diff).sum(axis=(0, 2)) / scale.reshape(-1)).reshape(scale.shape)
    dot = (view * diff).sum(axis=axes, keepdims=True)
    bottom = (diff - view * dot / np.square(norm)) / norm * per_channel
    return [bottom.reshape(x.shape)], [scale_diff]


def _happynear_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    """The fork's: ``(g - d * (y . g)) / norm`` with d = y ("L2") or sign(x) ("L1"); with
    ``bp_norm`` and a second top, its diff times d is added (the norm's own derivative)."""
    (x,) = inputs
    view, norm = _happynear_norm(node, x)
    shape = view.shape
    top, diff = ctx.outputs[0].reshape(shape), top_diffs[0].reshape(shape)
    along = np.sign(view) if node.param.normalize_param.normalize_type == "L1" else top
    dot = (top * diff).sum(axis=1, keepdims=True)
    bottom = (diff - along * dot) / norm
    if node.param.normalize_param.bp_norm and len(top_diffs) == 2 and top_diffs[1] is not None:
        bottom = bottom + top_diffs[1].reshape(norm.shape) * along
    return [bottom.reshape(x.shape)], []
