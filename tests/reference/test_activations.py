"""Elementwise layers against Caffe's scalar formulas, evaluated value by value with ``math``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffe_compat.errors import CaffeCompatError

VALUES = [-30.0, -2.5, -1.0, -0.25, 0.0, 0.5, 1.0, 3.0, 40.0]


def layer(kind: str, params: str = "") -> str:
    return f'layer {{ name: "a" type: "{kind}" bottom: "data" top: "a" {params} }}\n'


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def darknet_softplus(v: float) -> float:
    """softplus_activate(x, 20) of the YOLOv4 ports' mish_layer.cpp."""
    if v > 20:
        return v
    if v < -20:
        return math.exp(v)
    return math.log(math.exp(v) + 1)


FORMULAS = [
    ("ReLU", "", lambda v: max(v, 0.0)),
    ("ReLU", "relu_param { negative_slope: 0.125 }", lambda v: v if v > 0 else 0.125 * v),
    ("ELU", "elu_param { alpha: 0.5 }", lambda v: v if v > 0 else 0.5 * (math.exp(v) - 1)),
    ("Sigmoid", "", sigmoid),
    ("TanH", "", math.tanh),
    ("AbsVal", "", abs),
    ("BNLL", "", lambda v: v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }", lambda v: (1 + 0.5 * v) ** 2),
    ("Power", "power_param { power: 3 }", lambda v: v**3),
    ("Power", "power_param { power: 2 scale: 0 shift: 3 }", lambda v: 9.0),  # input ignored
    ("Power", "power_param { power: 0 shift: -2 }", lambda v: 1.0),
    ("Exp", "", math.exp),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", lambda v: 2 ** (1 + 0.5 * v)),
    ("Threshold", "threshold_param { threshold: 0.5 }", lambda v: float(v > 0.5)),
    ("Clip", "clip_param { min: -1 max: 2 }", lambda v: min(max(v, -1.0), 2.0)),
    ("Swish", "", lambda v: v * sigmoid(v)),
    ("Swish", "swish_param { beta: 2 }", lambda v: v * sigmoid(2 * v)),
    ("Dropout", "dropout_param { dropout_ratio: 0.3 }", lambda v: v),
    ("ReLU6", "", lambda v: min(max(v, 0.0), 6.0)),
    ("Mish", "", lambda v: v * math.tanh(darknet_softplus(v))),
]


@pytest.mark.parametrize(("kind", "params", "formula"), FORMULAS)
def test_formula(run_layers, kind, params, formula):
    x = np.array(VALUES).reshape(1, 3, 3, 1)
    out = run_layers(layer(kind, params), data=x)["a"]
    expected = np.array([formula(v) for v in VALUES]).reshape(x.shape)
    np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize(
    ("params", "formula"),
    [
        ("", math.log),
        ("log_param { base: 10 scale: 2 shift: 1 }", lambda v: math.log10(2 * v + 1)),
        ("log_param { base: 2 }", math.log2),
    ],
)
def test_log(run_layers, params, formula):
    values = [0.125, 0.5, 1.0, 3.0, 100.0]
    out = run_layers(layer("Log", params), data=np.array(values).reshape(1, 5))["a"]
    np.testing.assert_allclose(out[0], [formula(v) for v in values], rtol=1e-14)


def test_prelu_per_channel_and_shared(run_layers):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    slopes = np.array([0.5, -1.0, 0.25])
    out = run_layers(layer("PReLU"), {"a": [slopes]}, data=x)["a"]
    expected = np.where(x > 0, x, x * slopes[None, :, None, None])
    np.testing.assert_allclose(out, expected, rtol=1e-15)
    shared = run_layers(
        layer("PReLU", "prelu_param { channel_shared: true }"), {"a": [np.array(0.2)]}, data=x
    )["a"]
    np.testing.assert_allclose(shared, np.where(x > 0, x, 0.2 * x), rtol=1e-15)


def test_prelu_on_a_2d_bottom(run_layers):
    x = np.array([[-1.0, -2.0], [3.0, -4.0]])
    out = run_layers(layer("PReLU"), {"a": [np.array([0.5, 2.0])]}, data=x)["a"]
    np.testing.assert_array_equal(out, [[-0.5, -4.0], [3.0, -8.0]])


def test_caffe_clip_and_relu_keep_their_nan_rules(run_layers):
    """Clip is std::max(min, std::min(x, max)): a NaN input comes out as min."""
    x = np.array([[np.nan, 5.0]])
    clip = run_layers(layer("Clip", "clip_param { min: -1 max: 2 }"), data=x)["a"]
    np.testing.assert_array_equal(clip, [[-1.0, 2.0]])


def test_dropout_in_training_without_its_mask_is_refused(build):
    from caffe_compat.reference import forward

    from .conftest import inputs_layer

    x = np.ones((1, 3))
    graph = build(inputs_layer(data=x) + layer("Dropout"))
    graph.nodes[0].param.phase = 0  # TRAIN
    with pytest.raises(CaffeCompatError, match=r'"a" \(Dropout\): Dropout in the TRAIN phase'):
        forward(graph, {"data": x})


# --- backward against central differences (Caffe's GradientChecker) ---------------------------

X = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
POSITIVE = np.abs(X) + 0.5


@pytest.mark.parametrize(
    "kind, params, kink_range",
    [
        ("ReLU", "", 0.01),
        ("ReLU", "relu_param { negative_slope: 0.125 }", 0.01),
        ("ELU", "elu_param { alpha: 0.5 }", 0.01),
        ("Sigmoid", "", -1),
        ("TanH", "", -1),
        ("AbsVal", "", 0.01),
        ("BNLL", "", -1),
        ("Power", "power_param { power: 3 scale: 0.7 shift: 0.2 }", -1),
        ("Power", "power_param { power: 2 scale: -0.5 shift: 0.3 }", -1),
        ("Power", "power_param { power: 1 scale: 2 shift: 1 }", -1),
        ("Power", "power_param { power: 0 scale: 2 }", -1),
        ("Exp", "exp_param { base: 2 scale: 0.5 shift: 0.1 }", -1),
        ("Exp", "", -1),
        ("Swish", "swish_param { beta: 1.5 }", -1),
        ("Dropout", "", -1),  # TEST phase: the identity
        ("ReLU6", "", 0.01),
        ("Mish", "", -1),
    ],
)
def test_backward(grad_check, kind, params, kink_range):
    grad_check(layer(kind, params), data=X, kink_range=kink_range)


def test_backward_on_positive_inputs(grad_check):
    grad_check(layer("Log", "log_param { base: 3 scale: 0.5 shift: 0.2 }"), data=POSITIVE)
    grad_check(layer("Power", "power_param { power: 0.5 shift: 0.5 }"), data=POSITIVE)
    grad_check(layer("Power", "power_param { power: -1.5 scale: 2 }"), data=POSITIVE)


def test_clip_backward_away_from_its_bounds(grad_check):
    grad_check(
        layer("Clip", "clip_param { min: -0.5 max: 0.6 }"), data=X, kink=0.55, kink_range=0.06
    )


def test_prelu_backward_per_channel_and_shared(grad_check):
    slopes = {"a": [np.array([0.1, -0.3, 0.25])]}
    grad_check(layer("PReLU"), slopes, data=X, kink_range=0.01)
    grad_check(
        layer("PReLU", "prelu_param { channel_shared: true }"),
        {"a": [np.array(0.2)]},
        data=X,
        kink_range=0.01,
    )


def test_dropout_backward_with_its_mask(grad_check):
    mask = (np.random.default_rng(1).uniform(size=X.shape) > 0.4).astype(np.float64)
    report = grad_check(
        layer("Dropout", "dropout_param { dropout_ratio: 0.4 }"),
        phase="TRAIN",
        data=X,
        state={"mask": mask},
    )
    assert report.checked == X.size
