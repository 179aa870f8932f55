"""Accuracy as Caffe counts it (accuracy_layer.cpp): right when fewer than ``top_k`` scores are
>= the true class's, not counting itself, so ties count against it; the optional second top is
each class's accuracy over its own labels. Nothing flows back (Caffe has no backward)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.geometry import canonical_axis
from ._base import TorchContext
from .loss import class_labels


class Accuracy(nn.Module):
    def __init__(self, node: Node, ndim: int) -> None:
        super().__init__()
        p = node.param.accuracy_param
        self.axis = canonical_axis(int(p.axis), ndim)
        self.top_k = int(p.top_k)
        self.ignore = int(p.ignore_label) if p.HasField("ignore_label") else None
        self.per_class = len(node.outputs) > 1
        self.layer = node.name

    @torch.no_grad()
    def forward(self, scores: torch.Tensor, label: torch.Tensor):
        outer, classes = math.prod(scores.shape[: self.axis]), scores.shape[self.axis]
        view = scores.reshape(outer, classes, -1)
        labels, valid = class_labels(
            label.reshape(outer, -1), classes, self.ignore, self.layer, "Accuracy"
        )
        true = view.gather(1, labels[:, None, :])
        better = (view >= true).sum(dim=1) - 1  # the true class also counts as "better"
        right = (better < self.top_k) & valid
        count = valid.sum()
        accuracy = torch.where(count > 0, right.sum() / count.clamp(min=1), 0.0).to(scores.dtype)
        if not self.per_class:
            return accuracy
        seen = torch.bincount(labels[valid], minlength=classes).to(scores.dtype)
        hits = torch.bincount(labels[right], minlength=classes).to(scores.dtype)
        per_class = torch.where(seen > 0, hits / seen.clamp(min=1), torch.zeros_like(seen))
        return accuracy, per_class


@register("Accuracy", "torch")
def _accuracy(node: Node, ctx: TorchContext) -> nn.Module:
    return Accuracy(node, len(ctx.in_shapes[0]))
