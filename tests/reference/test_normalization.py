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
