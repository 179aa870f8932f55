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
