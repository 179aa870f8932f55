"""LRN: the per-pixel formulas of Caffe's test_lrn_layer.cpp (its ReferenceLRNForward, restated
here as loops), one case computed by hand, and every local size and region with k != 1."""

from __future__ import annotations

import itertools

import numpy as np
import pytest


def lrn(size: int, region: str = "ACROSS_CHANNELS", alpha=1.0, beta=0.75, k=1.0) -> str:
    return (
        f'layer {{ name: "n" type: "LRN" bottom: "data" top: "n" lrn_param {{ local_size: {size} '
        f"alpha: {alpha} beta: {beta} k: {k} norm_region: {region} }} }}"
    )


def across_loop(x, size, alpha, beta, k):
    """scale = k + sum over the channels [c - (n-1)/2, c + (n-1)/2] inside the blob of
    x^2 * alpha / n; y = x / scale^beta."""
    n, channels, height, width = x.shape
    y = np.empty_like(x)
    for i, c, h, w in itertools.product(range(n), range(channels), range(height), range(width)):
        start = c - (size - 1) // 2
        end, start = min(start + size, channels), max(start, 0)
        scale = k + sum(x[i, j, h, w] ** 2 * alpha / size for j in range(start, end))
        y[i, c, h, w] = x[i, c, h, w] / scale**beta
    return y


def within_loop(x, size, alpha, beta):
    """scale = 1 + sum over the size x size window clipped to the plane of
    x^2 * alpha / size^2; y = x / scale^beta (no k)."""
    n, channels, height, width = x.shape
    y = np.empty_like(x)
    half = (size - 1) // 2
    for i, c, h, w in itertools.product(range(n), range(channels), range(height), range(width)):
        hs, ws = h - half, w - half
        he, we = min(hs + size, height), min(ws + size, width)
        window = x[i, c, max(hs, 0) : he, max(ws, 0) : we]
        scale = 1 + (window**2).sum() * alpha / size**2
        y[i, c, h, w] = x[i, c, h, w] / scale**beta
    return y


def test_by_hand(run_layers):
    """Channels 1, 2, 3 at one pixel; n = 3, alpha = 3, beta = 1, k = 2: the sums of squares
    over each window are 5, 14, 13, so y = x / (2 + (3/3) * sum) = 1/7, 2/16, 3/15."""
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    out = run_layers(lrn(3, alpha=3, beta=1, k=2), data=x)["n"]
    np.testing.assert_allclose(out.reshape(-1), [1 / 7, 2 / 16, 3 / 15], rtol=1e-15)


@pytest.mark.parametrize("size", [5, 15])  # TestForwardAcrossChannels and ...LargeRegion
def test_caffe_across_channels_cases(run_layers, size):
    x = np.random.default_rng(1701).standard_normal((2, 7, 3, 3))
    out = run_layers(lrn(size, alpha=1.0, beta=0.75), data=x)["n"]
    np.testing.assert_allclose(out, across_loop(x, size, 1.0, 0.75, 1.0), rtol=1e-13)


def test_caffe_within_channel_case(run_layers):
    x = np.random.default_rng(1701).standard_normal((2, 7, 3, 3))
    out = run_layers(lrn(3, "WITHIN_CHANNEL", alpha=1.0, beta=0.75), data=x)["n"]
    np.testing.assert_allclose(out, within_loop(x, 3, 1.0, 0.75), rtol=1e-13)


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_sizes_regions_and_k_on_an_odd_shape(run_layers, size, region):
    x = np.random.default_rng(size).standard_normal((2, 5, 7, 9)) * 2  # params exact in float32
    out = run_layers(lrn(size, region, alpha=0.5, beta=0.625, k=2.5), data=x)["n"]
    if region == "ACROSS_CHANNELS":
        expected = across_loop(x, size, 0.5, 0.625, 2.5)
    else:
        expected = within_loop(x, size, 0.5, 0.625)  # k plays no part within a channel
    np.testing.assert_allclose(out, expected, rtol=1e-13)


def test_within_channel_ignores_k_and_across_uses_it(run_layers):
    x = np.random.default_rng(5).standard_normal((1, 3, 4, 4))
    within = [run_layers(lrn(3, "WITHIN_CHANNEL", k=k), data=x)["n"] for k in (1, 5)]
    across = [run_layers(lrn(3, k=k), data=x)["n"] for k in (1, 5)]
    np.testing.assert_array_equal(within[0], within[1])
    assert np.abs(across[0] - across[1]).max() > 0.1


# --- backward against central differences (Caffe's GradientChecker) ---------------------------


@pytest.mark.parametrize(
    "params",
    [
        "local_size: 3 alpha: 0.5 beta: 0.75 k: 2",
        "local_size: 5 alpha: 1.5 beta: 0.6",
        "local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL",
    ],
)
def test_backward(grad_check, params):
    grad_check(
        f'layer {{ name: "n" type: "LRN" bottom: "data" top: "n" lrn_param {{ {params} }} }}',
        data=np.random.default_rng(9).normal(size=(2, 7, 4, 5)),
    )
