"""InnerProduct: flatten from axis, W stored N x K (or K x N with transpose), plus bias."""

from __future__ import annotations

import numpy as np
import pytest

RNG = np.random.default_rng(4)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("axis", [1, 2, -1])
def test_inner_product(run_layers, axis, transpose):
    x = RNG.standard_normal((2, 5, 7, 9))
    start = axis % 4
    k = int(np.prod(x.shape[start:]))
    w, b = RNG.standard_normal((k, 6) if transpose else (6, k)), RNG.standard_normal(6)
    text = (
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { '
        f"num_output: 6 axis: {axis} transpose: {str(transpose).lower()} }} }}"
    )
    out = run_layers(text, {"fc": [w, b]}, data=x)["fc"]
    rows = x.reshape(*x.shape[:start], k)
    expected = np.einsum("...k,kn->...n", rows, w if transpose else w.T) + b
    assert out.shape == (*x.shape[:start], 6)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-13)


def test_no_bias(run_layers):
    x = RNG.standard_normal((3, 4))
    w = RNG.standard_normal((2, 4))
    text = 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 bias_term: false } }'
    np.testing.assert_allclose(run_layers(text, {"fc": [w]}, data=x)["fc"], x @ w.T, rtol=1e-14)


# --- backward against central differences (Caffe's GradientChecker) ---------------------------


@pytest.mark.parametrize(
    "params, weight",
    [
        ("num_output: 4", (4, 60)),
        ("num_output: 4 transpose: true axis: 2", (20, 4)),
        ("num_output: 2 axis: -1 bias_term: false", (2, 5)),
    ],
)
def test_backward(grad_check, params, weight):
    rng = np.random.default_rng(4)
    blobs = [rng.normal(size=weight)] + (
        []
        if "bias_term: false" in params
        else [rng.normal(size=weight[0] if "transpose" not in params else weight[1])]
    )
    grad_check(
        f'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        f"inner_product_param {{ {params} }} }}",
        {"ip": blobs},
        data=rng.normal(size=(2, 3, 4, 5)),
    )
