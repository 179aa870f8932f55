"""BatchNorm (stored statistics with Caffe's scale-factor blob, or the batch's own) and MVN."""

from __future__ import annotations

import numpy as np
import pytest

RNG = np.random.default_rng(11)


def batch_norm(params: str = "") -> str:
    return f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param {{ {params} }} }}\n'


def test_stored_statistics_are_divided_by_the_factor(run_layers):
    x = RNG.standard_normal((2, 5, 7, 9))
    mean, var, factor = RNG.standard_normal(5), RNG.uniform(0.5, 2, 5), 4.0
    blobs = [mean * factor, var * factor, np.array([factor])]
    out = run_layers(batch_norm("eps: 0.001"), {"bn": blobs}, data=x)["bn"]
    expected = (x - mean[None, :, None, None]) / np.sqrt(var + np.float32(0.001))[
        None, :, None, None
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-13)


def test_a_zero_factor_means_zero_statistics(run_layers):
    x = RNG.standard_normal((2, 5, 3, 3))
    blobs = [np.ones(5), np.ones(5), np.array([0.0])]
    out = run_layers(batch_norm(), {"bn": blobs}, data=x)["bn"]
    np.testing.assert_allclose(out, x / np.sqrt(float(np.float32(1e-5))), rtol=1e-13)


@pytest.mark.parametrize("shape", [(4, 5, 3, 2), (6, 5), (7,)])
def test_batch_statistics_when_global_stats_are_off(run_layers, shape):
    x = RNG.standard_normal(shape) * 3 + 1
    blobs = [np.zeros(1 if len(shape) == 1 else 5)] * 2 + [np.array([1.0])]
    out = run_layers(batch_norm("use_global_stats: false"), {"bn": blobs}, data=x)["bn"]
    axes = tuple(i for i in range(len(shape)) if i != 1) if len(shape) > 1 else (0,)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + np.float32(1e-5)), rtol=1e-12)


def mvn(params: str = "") -> str:
    return f'layer {{ name: "m" type: "MVN" bottom: "data" top: "m" mvn_param {{ {params} }} }}\n'


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize("variance", [False, True])
def test_mvn(run_layers, across, variance):
    x = RNG.standard_normal((2, 5, 7, 9)) * 2 + 3
    params = f"across_channels: {str(across).lower()} normalize_variance: {str(variance).lower()} eps: 0.5"
    out = run_layers(mvn(params), data=x)["m"]
    axes = (1, 2, 3) if across else (2, 3)
    expected = x - x.mean(axis=axes, keepdims=True)
    if variance:  # eps joins the standard deviation, not the variance
        expected = expected / (x.std(axis=axes, keepdims=True) + 0.5)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_mvn_writes_caffes_4d_view(run_layers):
    x = RNG.standard_normal((3, 4))
    out = run_layers(mvn(), data=x)["m"]
    assert out.shape == (3, 4, 1, 1)
    np.testing.assert_allclose(out[..., 0, 0], np.zeros((3, 4)), atol=1e-15)  # one value per (n, c)


# --- backward against central differences (Caffe's GradientChecker) ---------------------------

GRAD_X = np.random.default_rng(10).normal(size=(3, 2, 4, 5))


@pytest.mark.parametrize("params", ["", "batch_norm_param { use_global_stats: false eps: 0.01 }"])
def test_batch_norm_backward_on_batch_statistics(grad_check, params):
    layers = f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" {params} }}'
    zeros = [np.zeros(2), np.zeros(2), np.zeros(1)]
    report = grad_check(layers, {"bn": zeros}, phase="TRAIN", data=GRAD_X)
    assert report.checked == GRAD_X.size  # the statistics are not parameters


def test_batch_norm_backward_on_stored_statistics(grad_check):
    blobs = [np.array([0.3, -1.0]), np.array([2.0, 0.5]), np.array([2.0])]
    grad_check(
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }',
        {"bn": blobs},
        data=GRAD_X,
    )


@pytest.mark.parametrize(
    "params",
    ["", "mvn_param { across_channels: true }", "mvn_param { normalize_variance: false }"],
)
def test_mvn_backward(grad_check, params):
    grad_check(f'layer {{ name: "m" type: "MVN" bottom: "data" top: "m" {params} }}', data=GRAD_X)


def test_batch_norm_training_forward_leaves_caffes_running_sums(build):
    """m / (m - 1) x the biased batch variance, plus moving_average_fraction x the old sums."""
    from caffe_compat.reference._base import LayerContext
    from caffe_compat.registry import lookup

    from .conftest import inputs_layer

    graph = build(
        inputs_layer(data=GRAD_X) + 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" '
        "batch_norm_param { moving_average_fraction: 0.5 } }",
    )
    node = graph.nodes[0]
    node.param.phase = 0  # TRAIN
    old = (np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([2.0]))
    ctx = LayerContext((GRAD_X.shape,), (GRAD_X.shape,), old)
    lookup("BatchNorm", "reference").fn(node, [GRAD_X], ctx)
    mean, var, factor = ctx.state["blobs"]
    view = GRAD_X.transpose(1, 0, 2, 3).reshape(2, -1)
    m = view.shape[1]
    np.testing.assert_allclose(mean, view.mean(axis=1) + 0.5 * old[0])
    np.testing.assert_allclose(var, view.var(axis=1) * m / (m - 1) + 0.5 * old[1])
    np.testing.assert_allclose(factor, [2.0])  # 0.5 * 2 + 1


# --- BN (docs/forks.md): values by hand from the forks' bn_layer.cpp ---------------------------


def bn(params: str) -> str:
    return f'layer {{ name: "bn" type: "BN" bottom: "data" top: "bn" bn_param {{ {params} }} }}\n'


def test_segnet_bn_inference_is_scale_and_shift(run_layers):
    x = np.array([1.0, -2.0, 0.5, 4.0]).reshape(1, 2, 1, 2)
    blobs = [np.array([2.0, -1.0]).reshape(1, 2, 1, 1), np.array([0.5, 3.0]).reshape(1, 2, 1, 1)]
    out = run_layers(bn("bn_mode: INFERENCE"), {"bn": blobs}, data=x)["bn"]
    # channel 0: 2 * [1, -2] + 0.5; channel 1: -1 * [0.5, 4] + 3
    np.testing.assert_array_equal(out.reshape(-1), [2.5, -3.5, 2.5, -1.0])


def test_segnet_bn_learn_uses_the_batch_and_eps_1e_9(run_layers):
    x = np.array([1.0, 3.0, 0.0, 0.0, 2.0, 6.0, 0.0, 0.0]).reshape(2, 2, 1, 2)
    blobs = [np.array([1.0, 1.0]).reshape(1, 2, 1, 1), np.array([0.0, 10.0]).reshape(1, 2, 1, 1)]
    out = run_layers(bn(""), {"bn": blobs}, data=x)["bn"]
    # channel 0 holds 1, 3, 2, 6: mean 3, E(x^2) = 12.5, var = 3.5
    expected0 = (np.array([1.0, 3.0, 2.0, 6.0]) - 3) / np.sqrt(3.5 + 1e-9)
    np.testing.assert_allclose(out[:, 0].reshape(-1), expected0, rtol=1e-14)
    np.testing.assert_allclose(out[:, 1], 10.0)  # a constant channel: 0 / sqrt(1e-9) + shift


def test_pspnet_bn_uses_stored_mean_and_variance(run_layers):
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 1, 2)
    c = (1, 2, 1, 1)
    blobs = [
        np.array([2.0, 1.0]),
        np.array([0.0, -1.0]),
        np.array([1.0, 0.0]),
        np.array([3.0, 15.0]),
    ]
    out = run_layers(bn("frozen: true eps: 1"), {"bn": [b.reshape(c) for b in blobs]}, data=x)
    # channel 0: 2 * ([1, 2] - 1) / sqrt(3 + 1) + 0 = [0, 1]; channel 1: ([3, 4] - 0) / 4 - 1
    np.testing.assert_allclose(out["bn"].reshape(-1), [0.0, 1.0, -0.25, 0.0], atol=1e-15)


@pytest.mark.parametrize("params", ["bn_mode: INFERENCE", "frozen: true", "eps: 0.01"])
def test_bn_backward_on_stored_forms(grad_check, params):
    c = (1, 2, 1, 1)
    blobs = [np.array([0.7, -1.3]), np.array([0.2, 0.4])]
    if "bn_mode" not in params:
        blobs += [np.array([0.3, -1.0]), np.array([2.0, 0.5])]
    grad_check(bn(params), {"bn": [b.reshape(c) for b in blobs]}, data=GRAD_X)
