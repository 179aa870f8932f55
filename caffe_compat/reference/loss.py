"""Caffe's loss layers in float64, forward and backward (src/caffe/layers/*_loss_layer.cpp).

Labels are read as Caffe reads them, ``static_cast<int>`` (truncation toward zero); a label
outside the classes is refused (Caffe only checks it in debug builds and reads out of bounds).
Logs are floored as Caffe floors them (FLT_MIN for SoftmaxWithLoss, 1e-20 for InfogainLoss and
MultinomialLogisticLoss). A backward function scales by the loss top's diff, which the net sets
to the loss weight (Caffe's ``top[0]->cpu_diff()[0]``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import register
from ..shapes.geometry import canonical_axis
from ..shapes.loss import normalization, normalizer
from ._base import FLT_MIN, Arrays, BackwardContext, Grads, LayerContext

LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD


def labels_of(label: np.ndarray, classes: int, ignore: int | None, layer: str) -> np.ndarray:
    """Integer labels (truncated as ``static_cast<int>``), checked against the class count
    where they are not ignored."""
    values = np.trunc(label).astype(np.int64)
    used = values if ignore is None else values[values != ignore]
    bad = used[(used < 0) | (used >= classes)]
    if bad.size:
        raise ValueError(
            f"label {int(bad[0])} is outside the {classes} classes 0..{classes - 1} of {layer}"
        )
    return values


def _ignore(p: caffe_pb2.LossParameter) -> int | None:
    return int(p.ignore_label) if p.HasField("ignore_label") else None


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


class _Classes:
    """A (outer, classes, inner) view of a scores bottom and its labels (outer x inner)."""

    def __init__(self, node: Node, x: np.ndarray, label: np.ndarray, axis: int) -> None:
        self.axis = canonical_axis(axis, x.ndim)
        self.outer = math.prod(x.shape[: self.axis])
        self.classes = x.shape[self.axis]
        self.inner = math.prod(x.shape[self.axis + 1 :])
        self.ignore = _ignore(node.param.loss_param)
        raw = label.reshape(self.outer, self.inner)
        self.labels = labels_of(raw, self.classes, self.ignore, f'layer "{node.name}"')
        self.valid = np.ones_like(self.labels, dtype=bool)
        if self.ignore is not None:
            self.valid = self.labels != self.ignore
        self.safe = np.where(self.valid, self.labels, 0)  # an index even where ignored
        self.mode = normalization(node.param)

    def view(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(self.outer, self.classes, self.inner)

    def at_label(self, x: np.ndarray) -> np.ndarray:
        return np.take_along_axis(self.view(x), self.safe[:, None, :], axis=1)[:, 0, :]

    def one_hot(self) -> np.ndarray:
        hot = np.zeros((self.outer, self.classes, self.inner))
        np.put_along_axis(hot, self.safe[:, None, :], 1.0, axis=1)
        return hot

    @property
    def normalizer(self) -> float:
        return normalizer(self.mode, self.outer, self.inner, int(self.valid.sum()))


def _scalar(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float64)


def _weight(top_diffs: Arrays) -> float:
    return float(np.asarray(top_diffs[0]).reshape(-1)[0])


# --- SoftmaxWithLoss -------------------------------------------------------------------------


@register("SoftmaxWithLoss", "reference")
def _softmax_loss(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    x, label = inputs[0], inputs[1]
    c = _Classes(node, x, label, int(node.param.softmax_param.axis))
    prob = softmax(x, c.axis)
    picked = np.maximum(c.at_label(prob), FLT_MIN)
    loss = -np.log(picked)[c.valid].sum() / c.normalizer
    return [_scalar(loss)]


@register("SoftmaxWithLoss", "reference_backward")
def _softmax_loss_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    x, label = inputs[0], inputs[1]
    c = _Classes(node, x, label, int(node.param.softmax_param.axis))
    diff = c.view(softmax(x, c.axis)) - c.one_hot()
    diff *= c.valid[:, None, :]
    diff *= _weight(top_diffs) / c.normalizer
    return [diff.reshape(x.shape), None], []


# --- InfogainLoss ----------------------------------------------------------------------------


def read_infogain(node: Node) -> np.ndarray:
    """H from ``infogain_loss_param.source``: a BlobProto file, read from the working directory
    as Caffe reads it."""
    source = node.param.infogain_loss_param.source
    try:
        data = Path(source).read_bytes()
        blob = caffe_pb2.BlobProto.FromString(data)
    except OSError as exc:
        raise ValueError(f"cannot read the infogain matrix {source!r}: {exc.strerror}") from None
    except Exception:
        raise ValueError(f"the infogain matrix {source!r} is not a BlobProto file") from None
    values = blob.double_data if len(blob.double_data) else blob.data
    return np.asarray(values, dtype=np.float64)


def _infogain(node: Node, inputs: Arrays) -> tuple[_Classes, np.ndarray, np.ndarray]:
    x, label = inputs[0], inputs[1]
    c = _Classes(node, x, label, int(node.param.infogain_loss_param.axis))
    h = inputs[2].reshape(-1) if len(inputs) > 2 else read_infogain(node)
    if h.size != c.classes * c.classes:
        raise ValueError(f"H holds {h.size} values; {c.classes} classes need {c.classes**2}")
    return c, h.reshape(c.classes, c.classes), softmax(x, c.axis)


@register("InfogainLoss", "reference")
def _infogain_loss(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    c, h, prob = _infogain(node, inputs)
    rows = h[c.safe]  # (outer, inner, classes): H's row of each label
    logs = np.log(np.maximum(c.view(prob), LOG_THRESHOLD)).transpose(0, 2, 1)
    per = -(rows * logs).sum(axis=2)
    loss = per[c.valid].sum() / c.normalizer
    return [_scalar(loss), prob][: len(node.outputs)]


@register("InfogainLoss", "reference_backward")
def _infogain_loss_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    c, h, prob = _infogain(node, inputs)
    rows = h[c.safe].transpose(0, 2, 1)  # (outer, classes, inner)
    sums = h.sum(axis=1)[c.safe][:, None, :]
    diff = c.view(prob) * sums - rows
    diff *= c.valid[:, None, :]
    diff *= _weight(top_diffs) / c.normalizer
    return [diff.reshape(inputs[0].shape), None, None][: len(inputs)], []


# --- EuclideanLoss ---------------------------------------------------------------------------


def _difference(inputs: Arrays) -> np.ndarray:
    return inputs[0] - inputs[1].reshape(inputs[0].shape)


@register("EuclideanLoss", "reference")
def _euclidean(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    diff = _difference(inputs)
    return [_scalar(np.dot(diff.reshape(-1), diff.reshape(-1)) / inputs[0].shape[0] / 2)]


@register("EuclideanLoss", "reference_backward")
def _euclidean_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    diff = _difference(inputs)
    scale = _weight(top_diffs)
    grads = [
        (sign * scale / x.shape[0]) * diff.reshape(x.shape) for sign, x in zip((1.0, -1.0), inputs)
    ]
    return grads, []


# --- SigmoidCrossEntropyLoss -----------------------------------------------------------------


def _sigmoid_ce(node: Node, inputs: Arrays) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    x, target = inputs[0], inputs[1].reshape(inputs[0].shape)
    ignore = _ignore(node.param.loss_param)
    valid = np.ones(x.shape, dtype=bool)
    if ignore is not None:
        valid = np.trunc(target).astype(np.int64) != ignore
    outer = x.shape[0]
    scale = normalizer(normalization(node.param), outer, x.size // outer, int(valid.sum()))
    return x, target, valid, scale


@register("SigmoidCrossEntropyLoss", "reference")
def _sigmoid_cross_entropy(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    x, target, valid, scale = _sigmoid_ce(node, inputs)
    positive = (x >= 0).astype(np.float64)
    per = -(x * (target - positive) - np.log1p(np.exp(x - 2 * x * positive)))
    return [_scalar(per[valid].sum() / scale)]


@register("SigmoidCrossEntropyLoss", "reference_backward")
def _sigmoid_cross_entropy_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    x, target, valid, scale = _sigmoid_ce(node, inputs)
    e = np.exp(-np.abs(x))
    sigmoid = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    diff = (sigmoid - target) * valid * (_weight(top_diffs) / scale)
    return [diff, None], []


# --- HingeLoss -------------------------------------------------------------------------------


def _hinge_margins(node: Node, inputs: Arrays) -> tuple[np.ndarray, np.ndarray, int]:
    """max(0, 1 + x) with the true class's score negated, as Caffe leaves it in bottom diff."""
    x, label = inputs
    num = x.shape[0]
    flat = x.reshape(num, -1)
    labels = labels_of(label.reshape(-1)[:num], flat.shape[1], None, f'layer "{node.name}"')
    signed = flat.copy()
    rows = np.arange(num)
    signed[rows, labels] *= -1
    return np.maximum(0.0, 1.0 + signed), labels, num


@register("HingeLoss", "reference")
def _hinge(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    margins, _, num = _hinge_margins(node, inputs)
    if node.param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L2:
        return [_scalar(np.square(margins).sum() / num)]
    return [_scalar(np.abs(margins).sum() / num)]


@register("HingeLoss", "reference_backward")
def _hinge_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    margins, labels, num = _hinge_margins(node, inputs)
    margins[np.arange(num), labels] *= -1
    scale = _weight(top_diffs)
    if node.param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L2:
        diff = margins * (scale * 2 / num)
    else:
        diff = np.sign(margins) * (scale / num)
    return [diff.reshape(inputs[0].shape), None], []


# --- ContrastiveLoss -------------------------------------------------------------------------


def _pairs(inputs: Arrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, similar = inputs
    num = a.shape[0]
    diff = a.reshape(num, -1) - b.reshape(num, -1)
    same = np.trunc(similar.reshape(-1)[:num]).astype(np.int64) != 0
    return diff, np.square(diff).sum(axis=1), same


@register("ContrastiveLoss", "reference")
def _contrastive(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    p = node.param.contrastive_loss_param
    _, dist_sq, same = _pairs(inputs)
    margin = float(p.margin)
    if p.legacy_version:
        apart = np.maximum(margin - dist_sq, 0.0)
    else:
        apart = np.square(np.maximum(margin - np.sqrt(dist_sq), 0.0))
    loss = np.where(same, dist_sq, apart).sum()
    return [_scalar(loss / inputs[0].shape[0] / 2)]


@register("ContrastiveLoss", "reference_backward")
def _contrastive_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    p = node.param.contrastive_loss_param
    diff, dist_sq, same = _pairs(inputs)
    margin = float(p.margin)
    grads: list[np.ndarray | None] = [None, None, None]
    for i, sign in ((0, 1.0), (1, -1.0)):
        alpha = sign * _weight(top_diffs) / inputs[i].shape[0]
        if p.legacy_version:
            mdist = margin - dist_sq
            beta = np.full(dist_sq.shape, -alpha)
        else:
            dist = np.sqrt(dist_sq)
            mdist = margin - dist
            beta = -alpha * mdist / (dist + 1e-4)  # Caffe's guard against d = 0
        factor = np.where(same, alpha, np.where(mdist > 0, beta, 0.0))
        grads[i] = (factor[:, None] * diff).reshape(inputs[i].shape)
    return grads, []


# --- MultinomialLogisticLoss -----------------------------------------------------------------


def _picked(node: Node, inputs: Arrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, label = inputs
    num = x.shape[0]
    flat = x.reshape(num, -1)
    labels = labels_of(label.reshape(-1)[:num], flat.shape[1], None, f'layer "{node.name}"')
    return flat, labels, np.maximum(flat[np.arange(num), labels], LOG_THRESHOLD)


@register("MultinomialLogisticLoss", "reference")
def _multinomial(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    _, _, prob = _picked(node, inputs)
    return [_scalar(-np.log(prob).sum() / inputs[0].shape[0])]


@register("MultinomialLogisticLoss", "reference_backward")
def _multinomial_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    flat, labels, prob = _picked(node, inputs)
    num = flat.shape[0]
    diff = np.zeros_like(flat)
    diff[np.arange(num), labels] = (-_weight(top_diffs) / num) / prob
    return [diff.reshape(inputs[0].shape), None], []
