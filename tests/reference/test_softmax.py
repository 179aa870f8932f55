"""Softmax over any axis, stable for large inputs."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("axis", [1, 2, -1, 0])
def test_softmax(run_layers, axis):
    x = np.random.default_rng(3).standard_normal((2, 5, 7, 9)) * 4
    text = f'layer {{ name: "p" type: "Softmax" bottom: "data" top: "p" softmax_param {{ axis: {axis} }} }}'
    out = run_layers(text, data=x)["p"]
    e = np.exp(x)
    np.testing.assert_allclose(out, e / e.sum(axis=axis, keepdims=True), rtol=1e-13)


def test_large_logits_do_not_overflow(run_layers):
    x = np.array([[1000.0, 1000.0, 0.0]])
    out = run_layers('layer { name: "p" type: "Softmax" bottom: "data" top: "p" }', data=x)["p"]
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0]], atol=1e-300)


# --- backward against central differences (Caffe's GradientChecker) ---------------------------


@pytest.mark.parametrize("axis", [1, 2, -1, 0])
def test_backward(grad_check, axis):
    grad_check(
        f'layer {{ name: "s" type: "Softmax" bottom: "data" top: "s" '
        f"softmax_param {{ axis: {axis} }} }}",
        data=np.random.default_rng(15).normal(size=(2, 3, 4)),
    )
