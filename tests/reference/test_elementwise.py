"""Eltwise, Scale and Bias against their definitions, written with explicit loops/einsum."""

from __future__ import annotations

import numpy as np
import pytest

RNG = np.random.default_rng(7)


def eltwise(params: str, n: int = 3) -> str:
    bottoms = " ".join(f'bottom: "x{i}"' for i in range(n))
    return (
        f'layer {{ name: "e" type: "Eltwise" {bottoms} top: "e" eltwise_param {{ {params} }} }}\n'
    )


def arrays(n: int = 3, shape=(2, 5, 7, 9)) -> dict[str, np.ndarray]:
    return {f"x{i}": RNG.standard_normal(shape) for i in range(n)}


@pytest.mark.parametrize(
    ("params", "combine"),
    [
        ("operation: SUM", lambda a, b, c: a + b + c),
        ("operation: SUM coeff: 0.5 coeff: -2 coeff: 3", lambda a, b, c: 0.5 * a - 2 * b + 3 * c),
        ("operation: PROD", lambda a, b, c: a * b * c),
        ("operation: MAX", lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    ],
)
def test_eltwise(run_layers, params, combine):
    xs = arrays()
    out = run_layers(eltwise(params), **xs)["e"]
    np.testing.assert_allclose(out, combine(*xs.values()), rtol=1e-14)


def scale(params: str = "", bottoms=("data",), kind="Scale") -> str:
    wiring = " ".join(f'bottom: "{b}"' for b in bottoms)
    field = "scale_param" if kind == "Scale" else "bias_param"
    return f'layer {{ name: "s" type: "{kind}" {wiring} top: "s" {field} {{ {params} }} }}\n'


def test_scale_per_channel_with_bias(run_layers):
    x = RNG.standard_normal((2, 5, 7, 9))
    gamma, beta = RNG.standard_normal(5), RNG.standard_normal(5)
    out = run_layers(scale("bias_term: true"), {"s": [gamma, beta]}, data=x)["s"]
    expected = np.einsum("nchw,c->nchw", x, gamma) + beta[None, :, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-14)


def test_scale_over_two_axes_from_axis_2(run_layers):
    x = RNG.standard_normal((2, 5, 7, 9))
    gamma = RNG.standard_normal((7, 9))
    out = run_layers(scale("axis: 2 num_axes: 2"), {"s": [gamma]}, data=x)["s"]
    np.testing.assert_allclose(out, x * gamma, rtol=1e-15)


def test_scale_by_a_learned_scalar(run_layers):
    x = RNG.standard_normal((2, 5, 7, 9))
    out = run_layers(
        scale("num_axes: 0 bias_term: true"), {"s": [np.array(3.0), np.array(-1.0)]}, data=x
    )["s"]
    np.testing.assert_allclose(out, 3 * x - 1, rtol=1e-15)


def test_two_bottom_scale_with_bias_and_axis_0(run_layers):
    x, factor = RNG.standard_normal((2, 5, 7, 9)), RNG.standard_normal((2, 5))
    bias = RNG.standard_normal((2, 5))
    out = run_layers(
        scale("axis: 0 bias_term: true", ("data", "f")), {"s": [bias]}, data=x, f=factor
    )["s"]
    np.testing.assert_allclose(out, x * factor[..., None, None] + bias[..., None, None], rtol=1e-14)


def test_bias_learned_and_two_bottom(run_layers):
    x = RNG.standard_normal((2, 5, 7, 9))
    b = RNG.standard_normal(5)
    out = run_layers(scale("", kind="Bias"), {"s": [b]}, data=x)["s"]
    np.testing.assert_allclose(out, x + b[None, :, None, None], rtol=1e-15)
    other = RNG.standard_normal((5, 7))
    out = run_layers(scale("", ("data", "b"), kind="Bias"), data=x, b=other)["s"]
    np.testing.assert_allclose(out, x + other[None, :, :, None], rtol=1e-15)


# --- backward against central differences (Caffe's GradientChecker) ---------------------------


@pytest.mark.parametrize(
    "params",
    [
        "operation: PROD",
        "operation: PROD stable_prod_grad: false",
        "operation: SUM coeff: 2 coeff: -0.5 coeff: 1",
        "operation: MAX",
    ],
)
def test_eltwise_backward(grad_check, params):
    grad_check(eltwise(params), **arrays(3, (2, 3, 4, 5)))


def test_scale_and_bias_backward(grad_check):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 3, 4, 5))
    grad_check(
        scale("bias_term: true axis: 1 num_axes: 2"),
        {"s": [rng.normal(size=(3, 4)), rng.normal(size=(3, 4))]},
        data=x,
    )
    grad_check(scale("axis: 0", bottoms=("data", "op")), data=x, op=rng.normal(size=(2, 3)))
    grad_check(
        scale("bias_term: true", bottoms=("data", "op")),
        {"s": [rng.normal(size=(3,))]},
        data=x,
        op=rng.normal(size=(3,)),
    )
    grad_check(scale("", kind="Bias"), {"s": [rng.normal(size=(3,))]}, data=x)
    grad_check(
        scale("axis: 2", bottoms=("data", "op"), kind="Bias"), data=x, op=rng.normal(size=(4, 5))
    )


AXPY = 'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "out" }\n'


def test_axpy_by_hand(run_layers):
    """axpy_layer.cpp: top = y, then top[n, c] += a[n, c] * x[n, c]."""
    a = np.array([2.0, -1.0]).reshape(1, 2, 1, 1)
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 1, 2)
    y = np.array([10.0, 20.0, 30.0, 40.0]).reshape(1, 2, 1, 2)
    out = run_layers(AXPY, a=a, x=x, y=y)["out"]
    np.testing.assert_array_equal(out.reshape(-1), [12.0, 24.0, 27.0, 36.0])


def test_axpy_backward(grad_check):
    rng = np.random.default_rng(8)
    grad_check(
        AXPY,
        a=rng.normal(size=(2, 3, 1, 1)),
        x=rng.normal(size=(2, 3, 2, 3)),
        y=rng.normal(size=(2, 3, 2, 3)),
    )
