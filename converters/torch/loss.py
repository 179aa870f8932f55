"""Caffe's loss layers, each an ``autograd.Function`` whose backward is Caffe's own formula
(src/caffe/layers/*_loss_layer.cpp), not autograd's derivative of the forward: the floors under
the logs, ContrastiveLoss's ``d + 1e-4`` and HingeLoss's sign at the kink are Caffe's.

The top is a scalar; the incoming diff of that scalar is the loss weight the training engine
puts on it (Caffe's ``top[0]->cpu_diff()[0]``). Labels are read as ``static_cast<int>`` and must
name a class (one line naming the layer otherwise: Caffe would read out of bounds).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...errors import CaffeCompatError
from ...ir.graph import Node
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.geometry import canonical_axis
from ...shapes.loss import normalization
from ._base import TorchContext

FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_THRESHOLD = 1e-20
Norm = caffe_pb2.LossParameter


def class_labels(
    label: torch.Tensor, classes: int, ignore: int | None, layer: str, layer_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels as long, ignored ones replaced by 0; which are valid), checked against the
    class count."""
    values = label.detach().trunc().long()
    valid = torch.ones_like(values, dtype=torch.bool) if ignore is None else values != ignore
    bad = valid & ((values < 0) | (values >= classes))
    if bool(bad.any()):
        first = int(values[bad].reshape(-1)[0])
        raise CaffeCompatError(
            f"label {first} is outside the {classes} classes 0..{classes - 1}",
            layer=layer,
            layer_type=layer_type,
        )
    return torch.where(valid, values, torch.zeros_like(values)), valid


def normalizer(mode: int, outer: int, inner: int, valid: torch.Tensor) -> torch.Tensor:
    """Caffe's ``get_normalizer`` (never below 1), as a tensor so no device sync is needed."""
    if mode == Norm.VALID:
        count = valid.sum().to(torch.float32)
    else:
        count = torch.tensor(
            float({Norm.FULL: outer * inner, Norm.BATCH_SIZE: outer, Norm.NONE: 1}[mode]),
            device=valid.device,
        )
    return count.clamp(min=1.0)


def _ignore_label(node: Node) -> int | None:
    p = node.param.loss_param
    return int(p.ignore_label) if p.HasField("ignore_label") else None


class _LossModule(nn.Module):
    def __init__(self, node: Node) -> None:
        super().__init__()
        self.layer, self.layer_type = node.name, node.type
        self.ignore = _ignore_label(node)
        self.mode = normalization(node.param)


# --- SoftmaxWithLoss and InfogainLoss --------------------------------------------------------


class _SoftmaxLoss(torch.autograd.Function):
    """-sum log(max(p[label], FLT_MIN)) / n; diff ``(p - onehot) * w / n`` (0 where ignored)."""

    @staticmethod
    def forward(ctx, x, labels, valid, axis: int, scale):
        outer, classes = math.prod(x.shape[:axis]), x.shape[axis]
        prob = torch.softmax(x, dim=axis).reshape(outer, classes, -1)
        picked = prob.gather(1, labels[:, None, :])[:, 0, :]
        loss = -(torch.log(picked.clamp(min=FLT_MIN)) * valid).sum() / scale
        ctx.save_for_backward(prob, labels, valid, scale)
        ctx.shape = x.shape
        return loss

    @staticmethod
    def backward(ctx, g):
        prob, labels, valid, scale = ctx.saved_tensors
        diff = prob.clone()
        diff.scatter_add_(1, labels[:, None, :], -torch.ones_like(prob[:, :1, :]))
        diff *= valid[:, None, :]
        diff *= g / scale
        return diff.reshape(ctx.shape), None, None, None, None


class SoftmaxWithLoss(_LossModule):
    def __init__(self, node: Node, ndim: int) -> None:
        super().__init__(node)
        self.axis = canonical_axis(int(node.param.softmax_param.axis), ndim)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        outer, classes = math.prod(x.shape[: self.axis]), x.shape[self.axis]
        inner = math.prod(x.shape[self.axis + 1 :])
        labels, valid = class_labels(
            label.reshape(outer, inner), classes, self.ignore, self.layer, self.layer_type
        )
        scale = normalizer(self.mode, outer, inner, valid)
        return _SoftmaxLoss.apply(x, labels, valid.to(x.dtype), self.axis, scale)


class _InfogainLoss(torch.autograd.Function):
    """-sum_l H[label, l] log(max(p_l, 1e-20)) / n; diff ``(p * rowsum(H)[label] - H[label]) *
    w / n``."""

    @staticmethod
    def forward(ctx, x, h, labels, valid, axis: int, scale):
        outer, classes = math.prod(x.shape[:axis]), x.shape[axis]
        prob = torch.softmax(x, dim=axis).reshape(outer, classes, -1)
        rows = h[labels].permute(0, 2, 1)  # (outer, classes, inner): H's row of each label
        logs = torch.log(prob.clamp(min=LOG_THRESHOLD))
        loss = -((rows * logs).sum(dim=1) * valid).sum() / scale
        ctx.save_for_backward(prob, rows, h, labels, valid, scale)
        ctx.shape = x.shape
        top = prob.reshape(x.shape)
        ctx.mark_non_differentiable(top)  # Caffe's backward reads no diff of this top
        return loss, top

    @staticmethod
    def backward(ctx, g, _prob_diff):
        prob, rows, h, labels, valid, scale = ctx.saved_tensors
        sums = h.sum(dim=1)[labels][:, None, :]
        diff = (prob * sums - rows) * valid[:, None, :] * (g / scale)
        return diff.reshape(ctx.shape), None, None, None, None, None


class InfogainLoss(_LossModule):
    def __init__(self, node: Node, ndim: int, h: np.ndarray | None) -> None:
        super().__init__(node)
        self.axis = canonical_axis(int(node.param.infogain_loss_param.axis), ndim)
        self.register_buffer("h", None if h is None else torch.from_numpy(h.astype(np.float32)))
        self.tops = max(1, len(node.outputs))

    def forward(self, x: torch.Tensor, label: torch.Tensor, *given: torch.Tensor):
        outer, classes = math.prod(x.shape[: self.axis]), x.shape[self.axis]
        inner = math.prod(x.shape[self.axis + 1 :])
        h = (given[0] if given else self.h).detach().reshape(classes, classes)
        labels, valid = class_labels(
            label.reshape(outer, inner), classes, self.ignore, self.layer, self.layer_type
        )
        scale = normalizer(self.mode, outer, inner, valid)
        loss, prob = _InfogainLoss.apply(x, h, labels, valid.to(x.dtype), self.axis, scale)
        return (loss, prob) if self.tops == 2 else loss


def read_infogain(node: Node) -> np.ndarray:
    """H from ``infogain_loss_param.source`` (a BlobProto file, relative to the working directory
    as in Caffe)."""
    from ...io.binaryproto import read_blobproto

    return read_blobproto(node.param.infogain_loss_param.source, "infogain matrix")


# --- EuclideanLoss ---------------------------------------------------------------------------


class _EuclideanLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        diff = a - b.reshape(a.shape)
        ctx.save_for_backward(diff)
        ctx.shapes = (a.shape, b.shape)
        return (diff * diff).sum() / a.shape[0] / 2

    @staticmethod
    def backward(ctx, g):
        (diff,) = ctx.saved_tensors
        a, b = ctx.shapes
        return (g / a[0]) * diff, (-g / b[0]) * diff.reshape(b)


class EuclideanLoss(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _EuclideanLoss.apply(a, b)


# --- SigmoidCrossEntropyLoss -----------------------------------------------------------------


class _SigmoidCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, target, valid, scale):
        positive = (x >= 0).to(x.dtype)
        per = -(x * (target - positive) - torch.log1p(torch.exp(x - 2 * x * positive)))
        ctx.save_for_backward(x, target, valid, scale)
        return (per * valid).sum() / scale

    @staticmethod
    def backward(ctx, g):
        x, target, valid, scale = ctx.saved_tensors
        return (torch.sigmoid(x) - target) * valid * (g / scale), None, None, None


class SigmoidCrossEntropyLoss(_LossModule):
    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.detach().reshape(x.shape)
        valid = torch.ones_like(x, dtype=torch.bool)
        if self.ignore is not None:
            valid = target.trunc().long() != self.ignore
        outer = x.shape[0]
        scale = normalizer(self.mode, outer, x.numel() // outer, valid)
        return _SigmoidCrossEntropy.apply(x, target, valid.to(x.dtype), scale)


# --- HingeLoss -------------------------------------------------------------------------------


class _HingeLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, labels, squared: bool):
        num = x.shape[0]
        flat = x.reshape(num, -1)
        sign = torch.ones_like(flat).scatter_(1, labels[:, None], -1.0)
        margins = (1 + flat * sign).clamp(min=0)
        ctx.save_for_backward(margins, sign)
        ctx.shape, ctx.squared = x.shape, squared
        return (margins * margins).sum() / num if squared else margins.abs().sum() / num

    @staticmethod
    def backward(ctx, g):
        margins, sign = ctx.saved_tensors
        num = margins.shape[0]
        if ctx.squared:
            diff = margins * sign * (g * 2 / num)
        else:
            diff = torch.sign(margins) * sign * (g / num)
        return diff.reshape(ctx.shape), None, None


class HingeLoss(_LossModule):
    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.squared = node.param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L2

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        num = x.shape[0]
        classes = x.numel() // num
        labels, _ = class_labels(
            label.reshape(-1)[:num], classes, None, self.layer, self.layer_type
        )
        return _HingeLoss.apply(x, labels, self.squared)


# --- ContrastiveLoss -------------------------------------------------------------------------


class _ContrastiveLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, same, margin: float, legacy: bool):
        num = a.shape[0]
        diff = a.reshape(num, -1) - b.reshape(num, -1)
        dist_sq = (diff * diff).sum(dim=1)
        if legacy:
            apart = (margin - dist_sq).clamp(min=0)
        else:
            apart = (margin - dist_sq.sqrt()).clamp(min=0).square()
        ctx.save_for_backward(diff, dist_sq, same)
        ctx.margin, ctx.legacy, ctx.shapes = margin, legacy, (a.shape, b.shape)
        return torch.where(same, dist_sq, apart).sum() / num / 2

    @staticmethod
    def backward(ctx, g):
        diff, dist_sq, same = ctx.saved_tensors
        grads = []
        for shape, sign in zip(ctx.shapes, (1.0, -1.0)):
            alpha = sign * g / shape[0]
            if ctx.legacy:
                mdist = ctx.margin - dist_sq
                beta = -alpha * torch.ones_like(dist_sq)
            else:
                dist = dist_sq.sqrt()
                mdist = ctx.margin - dist
                beta = -alpha * mdist / (dist + 1e-4)  # Caffe's guard against d = 0
            factor = torch.where(same, alpha, torch.where(mdist > 0, beta, 0.0))
            grads.append((factor[:, None] * diff).reshape(shape))
        return grads[0], grads[1], None, None, None


class ContrastiveLoss(nn.Module):
    def __init__(self, node: Node) -> None:
        super().__init__()
        p = node.param.contrastive_loss_param
        self.margin = float(np.float32(p.margin))
        self.legacy = bool(p.legacy_version)

    def forward(self, a: torch.Tensor, b: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
        same = similar.detach().reshape(-1)[: a.shape[0]].trunc() != 0
        return _ContrastiveLoss.apply(a, b, same, self.margin, self.legacy)


# --- MultinomialLogisticLoss -----------------------------------------------------------------


class _MultinomialLogistic(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, labels):
        num = x.shape[0]
        flat = x.reshape(num, -1)
        prob = flat.gather(1, labels[:, None])[:, 0].clamp(min=LOG_THRESHOLD)
        ctx.save_for_backward(prob, labels)
        ctx.shape = x.shape
        return -torch.log(prob).sum() / num

    @staticmethod
    def backward(ctx, g):
        prob, labels = ctx.saved_tensors
        num = prob.shape[0]
        diff = torch.zeros((num, math.prod(ctx.shape[1:])), dtype=prob.dtype, device=prob.device)
        diff.scatter_(1, labels[:, None], ((-g / num) / prob)[:, None])
        return diff.reshape(ctx.shape), None


class MultinomialLogisticLoss(_LossModule):
    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        num = x.shape[0]
        labels, _ = class_labels(
            label.reshape(-1)[:num], x.numel() // num, None, self.layer, self.layer_type
        )
        return _MultinomialLogistic.apply(x, labels)


@register("SoftmaxWithLoss", "torch")
def _softmax_loss(node: Node, ctx: TorchContext) -> nn.Module:
    return SoftmaxWithLoss(node, len(ctx.in_shapes[0]))


@register("InfogainLoss", "torch")
def _infogain_loss(node: Node, ctx: TorchContext) -> nn.Module:
    h = read_infogain(node) if len(node.inputs) < 3 else None
    return InfogainLoss(node, len(ctx.in_shapes[0]), h)


@register("EuclideanLoss", "torch")
def _euclidean_loss(node: Node, ctx: TorchContext) -> nn.Module:
    return EuclideanLoss()


@register("SigmoidCrossEntropyLoss", "torch")
def _sigmoid_cross_entropy_loss(node: Node, ctx: TorchContext) -> nn.Module:
    return SigmoidCrossEntropyLoss(node)


@register("HingeLoss", "torch")
def _hinge_loss(node: Node, ctx: TorchContext) -> nn.Module:
    return HingeLoss(node)


@register("ContrastiveLoss", "torch")
def _contrastive_loss(node: Node, ctx: TorchContext) -> nn.Module:
    return ContrastiveLoss(node)


@register("MultinomialLogisticLoss", "torch")
def _multinomial_logistic_loss(node: Node, ctx: TorchContext) -> nn.Module:
    return MultinomialLogisticLoss(node)
