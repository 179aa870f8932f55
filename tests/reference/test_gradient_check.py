"""The gradient checker itself (Caffe's GradientChecker): it passes a right backward, catches a
wrong one, and skips elements at a kink as Caffe's does."""

from __future__ import annotations

import numpy as np

from caffe_compat import registry
from caffe_compat.reference.gradient_check import check_gradient

from .conftest import inputs_layer

X = np.array([[-1.5, -0.2, 0.0, 0.3, 2.0]])
LAYER = 'layer { name: "a" type: "ReLU" bottom: "data" top: "a" }'


def test_a_right_backward_passes_and_kinks_are_skipped(build):
    graph = build(inputs_layer(data=X) + LAYER)
    report = check_gradient(graph, {"data": X}, step=1e-3, kink=0.0, kink_range=0.01)
    assert report.passed and (report.checked, report.skipped) == (4, 1)
    # Without the kink range the element at 0 is checked, and the difference straddles it.
    report = check_gradient(graph, {"data": X}, step=1e-3)
    assert not report.passed and [m.index for m in report.mismatches] == [(0, 2)]


def test_a_wrong_backward_is_caught(build):
    def doubled(node, inputs, top_diffs, ctx):
        return [2 * top_diffs[0] * (inputs[0] > 0)], []

    registry.register("ReLU", "reference_backward")(doubled)
    try:
        graph = build(inputs_layer(data=X) + LAYER)
        report = check_gradient(graph, {"data": X}, step=1e-3, kink=0.0, kink_range=0.01)
    finally:
        registry.unregister("ReLU", "reference_backward")
    assert {m.index for m in report.mismatches} == {(0, 3), (0, 4)}
    assert "analytic" in str(report)
