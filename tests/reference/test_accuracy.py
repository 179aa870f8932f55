"""Accuracy in float64 against Caffe's counting loop (test_accuracy_layer.cpp's way)."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import inputs_layer


def caffe_loop(scores, labels, top_k, ignore):
    right = count = 0
    for row, label in zip(scores, labels.astype(int)):
        if label == ignore:
            continue
        count += 1
        better = -1  # the true class also counts as "better"
        for value in row:
            better += value >= row[label]
        right += better < top_k
    return right / count if count else 0.0


@pytest.mark.parametrize("top_k, ignore", [(1, None), (2, None), (1, 3)])
def test_accuracy(build, top_k, ignore):
    from caffe_compat.reference import forward

    rng = np.random.default_rng(top_k)
    scores = rng.integers(0, 4, size=(30, 6)).astype(np.float64)  # many ties
    labels = rng.integers(0, 6, size=(30,)).astype(np.float64)
    extra = f"ignore_label: {ignore}" if ignore is not None else ""
    graph = build(
        inputs_layer(data=scores, label=labels)
        + 'layer { name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" '
        f"accuracy_param {{ top_k: {top_k} {extra} }} }}",
        training=True,
    )
    found = forward(graph, {"data": scores, "label": labels}, outputs=["acc"])["acc"]
    assert float(found) == pytest.approx(caffe_loop(scores, labels, top_k, ignore))
