"""Scale, Bias and Eltwise in every form Caffe allows, against OpenCV 4 (it has no Bias layer) and
numpy versions of Caffe's scale_layer, bias_layer and eltwise_layer formulas."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net

TWO = (
    'layer { name: "in" type: "Input" top: "data" top: "s" input_param { '
    "shape { dim: 2 dim: 5 dim: 7 dim: 9 } shape { %s } } }\n"
)


def dims(*values: int) -> str:
    return " ".join(f"dim: {v}" for v in values)


def place(operand: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """The operand reshaped to broadcast from ``axis`` of an ``ndim``-D blob (numpy's own rules)."""
    operand = np.asarray(operand, dtype=np.float64)
    return operand.reshape(operand.shape + (1,) * (ndim - axis - operand.ndim))


# (scale_param / bias_param text, axis where the operand starts). OpenCV fails to load the last
# two: it does not resolve negative axes, and cannot read the 0-axis blob of num_axes 0.
FORMS = [
    ("", 1),
    ("axis: 1 num_axes: 2", 1),
    ("axis: 2 num_axes: -1", 2),
    ("axis: 3", 3),
    ("axis: -2 num_axes: 2", 2),
    ("axis: 0 num_axes: 0", 0),
]
OPENCV_LOADS = {text for text, _ in FORMS[:4]}


@pytest.mark.parametrize(("params", "axis"), FORMS)
@pytest.mark.parametrize("bias_term", [False, True])
def test_scale_learned(layer_check, params, axis, bias_term):
    text = params + (" bias_term: true" if bias_term else "")
    prototxt = net(
        f'layer {{ name: "a" type: "Scale" bottom: "data" top: "y" scale_param {{ {text} }} }}\n'
        f'layer {{ name: "b" type: "Scale" bottom: "y" top: "y" scale_param {{ {text} }} }}'
    )

    def expected(inputs, w):
        y = inputs["data"].astype(np.float64)
        for layer in ("a", "b"):
            y = y * place(w[layer][0], axis, 4)
            y = y + place(w[layer][1], axis, 4) if bias_term else y
        return {"y": y}

    layer_check(prototxt, expected, opencv=params in OPENCV_LOADS)


@pytest.mark.parametrize(
    ("shape", "params", "axis"),
    [
        ((2, 5), "axis: 0", 0),  # squeeze-and-excitation: per-item channel weights
        ((5, 7), "", 1),
        ((2, 5, 7, 9), "axis: 0", 0),
        ((9,), "axis: -1", 3),
    ],
)
@pytest.mark.parametrize("bias_term", [False, True])
def test_scale_from_second_bottom(layer_check, shape, params, axis, bias_term):
    text = params + (" bias_term: true" if bias_term else "")
    prototxt = (
        TWO % dims(*shape)
        + f'layer {{ name: "sc" type: "Scale" bottom: "data" bottom: "s" top: "data" scale_param {{ {text} }} }}'
    )

    def expected(inputs, w):
        y = inputs["data"].astype(np.float64) * place(inputs["s"], axis, 4)
        return {"data": y + place(w["sc"][0], axis, 4) if bias_term else y}

    def feeds(n):
        rng = np.random.default_rng(n)
        s_shape = (n, *shape[1:]) if axis == 0 else shape
        return {
            "data": rng.standard_normal((n, 5, 7, 9), np.float32),
            "s": rng.standard_normal(s_shape, np.float32),
        }

    # A bias over the batch axis is a blob with the prototxt's batch size: that cannot change.
    # OpenCV fails on a 1-D second bottom and computes something else when bias_term is set.
    opencv = not bias_term and len(shape) > 1
    layer_check(
        prototxt, expected, feeds=feeds, opencv=opencv, dynamic=not (bias_term and axis == 0)
    )


@pytest.mark.parametrize(("params", "axis"), FORMS)
def test_bias_learned(layer_check, params, axis):
    prototxt = net(
        f'layer {{ name: "a" type: "Bias" bottom: "data" top: "y" bias_param {{ {params} }} }}\n'
        f'layer {{ name: "b" type: "Bias" bottom: "y" top: "y" bias_param {{ {params} }} }}'
    )

    def expected(inputs, w):
        return {"y": inputs["data"] + place(w["a"][0], axis, 4) + place(w["b"][0], axis, 4)}

    layer_check(prototxt, expected, opencv=False)


@pytest.mark.parametrize(
    ("shape", "params", "axis"), [((2, 5), "axis: 0", 0), ((7, 9), "axis: 2", 2)]
)
def test_bias_from_second_bottom(layer_check, shape, params, axis):
    prototxt = (
        TWO % dims(*shape)
        + f'layer {{ name: "b" type: "Bias" bottom: "data" bottom: "s" top: "data" bias_param {{ {params} }} }}'
    )

    def feeds(n):
        rng = np.random.default_rng(n)
        s_shape = (n, *shape[1:]) if axis == 0 else shape
        return {
            "data": rng.standard_normal((n, 5, 7, 9), np.float32),
            "s": rng.standard_normal(s_shape, np.float32),
        }

    expected = lambda i, w: {"data": i["data"] + place(i["s"], axis, 4)}  # noqa: E731
    layer_check(prototxt, expected, feeds=feeds, opencv=False)


THREE = 'layer { name: "in" type: "Input" top: "a" top: "b" top: "c" input_param { %s } }\n' % (
    "shape { dim: 2 dim: 5 dim: 7 dim: 9 } " * 3
)


@pytest.mark.parametrize(
    ("params", "fn"),
    [
        ("", lambda a, b, c: a + b + c),
        (
            "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }",
            lambda a, b, c: a - 0.5 * b + 2 * c,
        ),
        ("eltwise_param { operation: PROD }", lambda a, b, c: a * b * c),
        ("eltwise_param { operation: MAX }", lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    ],
)
@pytest.mark.parametrize("in_place", [False, True])
def test_eltwise_three_bottoms(layer_check, params, fn, in_place):
    top = "a" if in_place else "y"
    prototxt = (
        THREE
        + f'layer {{ name: "e" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "{top}" {params} }}'
    )
    expected = lambda i, w: {top: fn(*(i[k].astype(np.float64) for k in "abc"))}  # noqa: E731
    layer_check(prototxt, expected)


def test_eltwise_residual_sum_of_two(layer_check):
    prototxt = net(
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 5 kernel_size: 3 pad: 1 } }\n'
        'layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "data" top: "sum" eltwise_param { coeff: 0.5 coeff: 1.5 } }'
    )
    layer_check(prototxt)  # OpenCV alone: its convolution is already tested against numpy


def test_senet_axpy(layer_check):
    """SENet's Axpy (docs/forks.md): a * x + y, a per (item, channel) from a global pool.
    OpenCV 4.14 reads Axpy as a Scale and an Eltwise but fails to run them (a shape assertion in
    its Scale): numpy is the reference."""
    body = (
        'layer { name: "a" type: "Pooling" bottom: "data" top: "a" '
        "pooling_param { pool: AVE global_pooling: true } }\n"
        'layer { name: "y" type: "ReLU" bottom: "data" top: "y" }\n'
        'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "data" bottom: "y" top: "out" }'
    )

    def expected(feeds, _):
        x = feeds["data"].astype(np.float64)
        return {"out": x.mean(axis=(2, 3), keepdims=True) * x + np.maximum(x, 0)}

    layer_check(net(body), expected, opencv=False)
