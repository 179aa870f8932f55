"""ArgMax with Caffe's tie order (pairs ranked by std::greater: equal values, higher index
first) and Reduction's four operations."""

from __future__ import annotations

import numpy as np
import pytest


def argmax(params: str) -> str:
    return f'layer {{ name: "a" type: "ArgMax" bottom: "data" top: "a" argmax_param {{ {params} }} }}\n'


def test_ties_put_the_higher_index_first(run_layers):
    x = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    out = run_layers(argmax("top_k: 4 out_max_val: true"), data=x)["a"]
    assert out.shape == (1, 2, 4)
    np.testing.assert_array_equal(out[0], [[4, 2, 1, 3], [3, 3, 3, 2]])


def test_without_axis_each_item_is_ranked_whole(run_layers):
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 5))
    out = run_layers(argmax("top_k: 3"), data=x)["a"]
    assert out.shape == (3, 1, 3, 1)
    flat = x.reshape(3, -1)
    expected = np.argsort(-flat, axis=1)[:, :3]
    np.testing.assert_array_equal(out[:, 0, :, 0], expected)


@pytest.mark.parametrize("out_max_val", [False, True])
def test_along_an_axis(run_layers, out_max_val):
    x = np.random.default_rng(1).standard_normal((2, 6, 3, 4))
    flag = str(out_max_val).lower()
    out = run_layers(argmax(f"top_k: 2 axis: 1 out_max_val: {flag}"), data=x)["a"]
    order = np.argsort(-x, axis=1)[:, :2]
    expected = np.take_along_axis(x, order, axis=1) if out_max_val else order
    np.testing.assert_array_equal(out, expected)


def reduction(params: str) -> str:
    return f'layer {{ name: "r" type: "Reduction" bottom: "data" top: "r" reduction_param {{ {params} }} }}\n'


@pytest.mark.parametrize(
    ("operation", "formula"),
    [
        ("SUM", lambda v: v.sum(-1)),
        ("ASUM", lambda v: np.abs(v).sum(-1)),
        ("SUMSQ", lambda v: (v * v).sum(-1)),
        ("MEAN", lambda v: v.mean(-1)),
    ],
)
@pytest.mark.parametrize("axis", [0, 2, -1])
def test_reduction(run_layers, operation, formula, axis):
    x = np.random.default_rng(2).standard_normal((2, 5, 7, 9))
    out = run_layers(reduction(f"operation: {operation} axis: {axis} coeff: -0.5"), data=x)["r"]
    start = axis % 4
    expected = -0.5 * formula(x.reshape(*x.shape[:start], -1))
    assert out.shape == x.shape[:start]
    np.testing.assert_allclose(out, expected, rtol=1e-13)


# --- backward against central differences (Caffe's GradientChecker) ---------------------------


@pytest.mark.parametrize(
    "params, kink_range",
    [
        ("operation: SUM axis: 1", -1),
        ("operation: ASUM axis: 2 coeff: -2", 0.01),
        ("operation: SUMSQ axis: 0 coeff: 0.5", -1),
        ("operation: MEAN axis: -1 coeff: 3", -1),
    ],
)
def test_reduction_backward(grad_check, params, kink_range):
    grad_check(
        f'layer {{ name: "r" type: "Reduction" bottom: "data" top: "r" '
        f"reduction_param {{ {params} }} }}",
        data=np.random.default_rng(12).normal(size=(2, 3, 4)),
        kink_range=kink_range,
    )
