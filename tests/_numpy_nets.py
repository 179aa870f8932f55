"""Caffe's formulas in plain numpy (float64), written from Caffe's layer definitions and nothing in
caffe_compat: the judge for tests where no OpenCV Caffe reader exists (OpenCV 5).

Only what the tests need: convolution, ReLU, Caffe's MAX pooling (ceil-mode output size, a last
window that would start inside the padding dropped), cross-channel LRN with k, inner product,
softmax, the Levi-Hassner architecture, and SSD's DetectionOutput (CENTER_SIZE decoding,
per-class greedy NMS, keep_top_k) on its three bottoms.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 1, pad: int = 0):
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    y = np.tensordot(windows, np.asarray(w, np.float64), axes=([1, 4, 5], [1, 2, 3]))
    y = y.transpose(0, 3, 1, 2)
    return y if b is None else y + np.asarray(b, np.float64)[None, :, None, None]


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def max_pool(x: np.ndarray, kernel: int, stride: int, pad: int = 0) -> np.ndarray:
    """Caffe: out = ceil((in + 2 pad - kernel) / stride) + 1, minus one when the last window
    would start in the padding; windows hanging over the edge see only real pixels."""
    h, w = x.shape[2:]
    sizes = []
    for size in (h, w):
        out = math.ceil((size + 2 * pad - kernel) / stride) + 1
        if pad and (out - 1) * stride >= size + pad:
            out -= 1
        sizes.append(out)
    oh, ow = sizes
    high = ((oh - 1) * stride + kernel - h - pad, (ow - 1) * stride + kernel - w - pad)
    padded = np.pad(
        np.asarray(x, np.float64),
        ((0, 0), (0, 0), (pad, max(high[0], 0)), (pad, max(high[1], 0))),
        constant_values=-np.inf,
    )
    windows = sliding_window_view(padded, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return windows[:, :, :oh, :ow].max(axis=(4, 5))


def lrn_across(x: np.ndarray, size: int, alpha: float, beta: float, k: float = 1.0):
    """y = x / (k + alpha / size * sum of x^2 over ``size`` neighbouring channels) ^ beta."""
    x = np.asarray(x, np.float64)
    half = (size - 1) // 2
    squares = np.pad(x * x, ((0, 0), (half, size - 1 - half), (0, 0), (0, 0)))
    window = sliding_window_view(squares, size, axis=1).sum(axis=-1)
    return x / (k + alpha / size * window) ** beta


def inner_product(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    return flat @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def levi_hassner(blobs: dict[str, list[np.ndarray]], x: np.ndarray) -> dict[str, np.ndarray]:
    """The age/gender CNN of Levi & Hassner (2015) as its deploy prototxt defines it."""
    out: dict[str, np.ndarray] = {}  # blob@layer: a blob before the in-place layers after it
    out["conv1@conv1"] = conv2d(x, *blobs["conv1"], stride=4)
    out["conv1"] = relu(out["conv1@conv1"])
    h = lrn_across(max_pool(out["conv1"], 3, 2), 5, 1e-4, 0.75)
    h = lrn_across(max_pool(relu(conv2d(h, *blobs["conv2"], pad=2)), 3, 2), 5, 1e-4, 0.75)
    out["pool5"] = max_pool(relu(conv2d(h, *blobs["conv3"], pad=1)), 3, 2)
    out["fc7@fc7"] = inner_product(relu(inner_product(out["pool5"], *blobs["fc6"])), *blobs["fc7"])
    out["fc7"] = relu(out["fc7@fc7"])  # dropout is the identity at test time
    out["fc8"] = inner_product(out["fc7"], *blobs["fc8"])
    out["prob"] = softmax(out["fc8"])
    return out


# --- SSD's DetectionOutput ---------------------------------------------------------------------


def decode_center_size(loc: np.ndarray, priors: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """Boxes (P, 4) from offsets (P, 4), prior corners (P, 4) and their variances (P, 4)."""
    width, height = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    cx = (priors[:, 0] + priors[:, 2]) / 2 + variances[:, 0] * loc[:, 0] * width
    cy = (priors[:, 1] + priors[:, 3]) / 2 + variances[:, 1] * loc[:, 1] * height
    w = np.exp(variances[:, 2] * loc[:, 2]) * width
    h = np.exp(variances[:, 3] * loc[:, 3]) * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _size(boxes: np.ndarray) -> np.ndarray:
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return np.where((w < 0) | (h < 0), 0.0, w * h)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Caffe's JaccardOverlap (normalized coordinates): 0 for boxes apart or only touching."""
    lo = np.maximum(box[:2], others[:, :2])
    hi = np.minimum(box[2:], others[:, 2:])
    apart = (others[:, 0] > box[2]) | (others[:, 2] < box[0])
    apart |= (others[:, 1] > box[3]) | (others[:, 3] < box[1])
    inter = _size(np.concatenate([lo, hi], axis=1))
    union = _size(box) + _size(others) - inter
    return np.where(apart | (inter <= 0), 0.0, inter / np.where(union > 0, union, 1.0))


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, nms: float, top_k: int):
    """Indices kept: scores > threshold, best first (stable), at most top_k, then each kept when
    its IoU with every kept box is <= nms."""
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > threshold]
    kept: list[int] = []
    for i in order[:top_k] if top_k >= 0 else order:
        if not kept or iou(boxes[i], boxes[kept]).max() <= nms:
            kept.append(int(i))
    return kept


def detection_output(
    loc: np.ndarray,
    conf: np.ndarray,
    prior: np.ndarray,
    *,
    num_classes: int,
    background: int,
    nms: float,
    top_k: int,
    keep_top_k: int,
    threshold: float,
) -> np.ndarray:
    """Rows [image, label, score, xmin, ymin, xmax, ymax] (shared locations, CENTER_SIZE), in
    Caffe's order: by image, then label, then score."""
    batch = len(loc)
    priors = prior[0, 0].reshape(-1, 4).astype(np.float64)
    variances = prior[0, 1].reshape(-1, 4).astype(np.float64)
    rows = []
    for i in range(batch):
        boxes = decode_center_size(loc[i].reshape(-1, 4).astype(np.float64), priors, variances)
        scores = conf[i].reshape(len(priors), num_classes).astype(np.float64)
        found = [
            (label, index, scores[index, label])
            for label in range(num_classes)
            if label != background
            for index in greedy_nms(boxes, scores[:, label], threshold, nms, top_k)
        ]
        if 0 <= keep_top_k < len(found):
            found = sorted(found, key=lambda t: -t[2])[:keep_top_k]
        found.sort(key=lambda t: (t[0], -t[2]))
        rows += [[i, label, score, *boxes[index]] for label, index, score in found]
    if not rows:
        return np.array([[i, -1, -1, -1, -1, -1, -1] for i in range(batch)], np.float64)
    return np.array(rows, np.float64)


def canonical(rows: np.ndarray) -> np.ndarray:
    """Detection rows (any leading shape) sorted by image, label, descending score, then box."""
    rows = np.asarray(rows, np.float64).reshape(-1, 7)
    keys = (rows[:, 6], rows[:, 5], rows[:, 4], rows[:, 3], -rows[:, 2], rows[:, 1], rows[:, 0])
    return rows[np.lexsort(keys)]
