"""Accuracy as Caffe counts it (accuracy_layer.cpp): a prediction is right when fewer than
``top_k`` scores are >= the true class's score, the true class itself not counted, so a tie
with the true class counts against it. The second top, when asked for, is each class's accuracy
over the labels of that class (0 for a class absent from the labels)."""

from __future__ import annotations

import math

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.geometry import canonical_axis
from ._base import Arrays, LayerContext
from .loss import labels_of


@register("Accuracy", "reference")
def _accuracy(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    scores, label = inputs
    p = node.param.accuracy_param
    axis = canonical_axis(int(p.axis), scores.ndim)
    outer, classes = math.prod(scores.shape[:axis]), scores.shape[axis]
    inner = math.prod(scores.shape[axis + 1 :])
    view = scores.reshape(outer, classes, inner)
    ignore = int(p.ignore_label) if p.HasField("ignore_label") else None
    labels = labels_of(label.reshape(outer, inner), classes, ignore, f'layer "{node.name}"')
    valid = np.ones(labels.shape, dtype=bool) if ignore is None else labels != ignore
    safe = np.where(valid, labels, 0)
    true = np.take_along_axis(view, safe[:, None, :], axis=1)
    better = (view >= true).sum(axis=1) - 1  # the true class also counts as "better"
    right = (better < int(p.top_k)) & valid
    count = int(valid.sum())
    tops = [np.array(right.sum() / count if count else 0.0)]
    if len(node.outputs) > 1:
        seen = np.bincount(labels[valid], minlength=classes).astype(np.float64)
        hits = np.bincount(labels[right], minlength=classes).astype(np.float64)
        tops.append(np.divide(hits, seen, out=np.zeros(classes), where=seen > 0))
    return tops
