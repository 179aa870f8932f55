"""Accuracy's PyTorch module, through the training engine: Caffe's counting (ported from BVLC
Caffe's src/caffe/test/test_accuracy_layer.cpp as an independent loop) and the float64
reference."""

from __future__ import annotations

import numpy as np
import pytest
from _training import inputs_layer, judge, make_net

RNG = np.random.default_rng(4)
SCORES = RNG.normal(size=(10, 5, 2, 3)).astype(np.float32)
LABELS = RNG.integers(0, 5, size=(10, 1, 2, 3)).astype(np.float32)


def accuracy_loop(scores, labels, top_k=1, ignore=None, axis=1):
    """Caffe's count: scores >= the true class's, not counting itself, below top_k."""
    moved = np.moveaxis(scores, axis, -1).reshape(-1, scores.shape[axis])
    right, count = 0, 0
    per_hits = np.zeros(scores.shape[axis])
    per_seen = np.zeros(scores.shape[axis])
    for row, label in zip(moved, labels.reshape(-1).astype(int)):
        if ignore is not None and label == ignore:
            continue
        count += 1
        per_seen[label] += 1
        better = sum(1 for v in row if v >= row[label]) - 1
        if better < top_k:
            right += 1
            per_hits[label] += 1
    per = np.divide(per_hits, per_seen, out=np.zeros_like(per_hits), where=per_seen > 0)
    return (right / count if count else 0.0), per


@pytest.mark.parametrize(
    "body, top_k, ignore",
    [
        ("", 1, None),
        ("accuracy_param { top_k: 3 }", 3, None),
        ("accuracy_param { ignore_label: 2 }", 1, 2),
    ],
)
def test_accuracy_as_caffe_counts(tmp_path, body, top_k, ignore):
    scores = RNG.normal(size=(20, 10)).astype(np.float32)
    labels = RNG.integers(0, 10, size=(20,)).astype(np.float32)
    text = inputs_layer(data=scores, label=labels) + (
        f'layer {{ name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" '
        f'top: "per_class" {body} }}'
    )
    net = make_net(tmp_path, text)
    out = net.forward({"data": scores, "label": labels})
    expected, per = accuracy_loop(scores, labels, top_k, ignore)
    assert float(out["acc"]) == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(out["per_class"].numpy(), per, atol=1e-6)
    judge(net, {"data": scores, "label": labels})  # the reference counts the same


def test_accuracy_ties_count_against_the_true_class(tmp_path):
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]], np.float32)
    labels = np.array([0, 2], np.float32)
    text = inputs_layer(data=scores, label=labels) + (
        'layer { name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" }'
    )
    net = make_net(tmp_path, text)
    assert float(net.forward({"data": scores, "label": labels})["acc"]) == 0.0


def test_accuracy_over_spatial_axes(tmp_path):
    text = inputs_layer(data=SCORES, label=LABELS) + (
        'layer { name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" }'
    )
    net = make_net(tmp_path, text)
    expected, _ = accuracy_loop(SCORES, LABELS)
    assert float(net.forward({"data": SCORES, "label": LABELS})["acc"]) == pytest.approx(
        expected, abs=1e-6
    )
