"""LRN across and within channels, local_size 1, 3 and 5, against OpenCV 4."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net, uniform


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn(layer_parity, size, region):
    layer_parity(
        net(
            f'layer {{ name: "n" type: "LRN" bottom: "data" top: "n" lrn_param {{ local_size: {size} '
            f"alpha: 0.5 beta: 0.75 norm_region: {region} }} }}"
        )
    )


def caffe_lrn_across(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Caffe's CrossChannelForward_cpu: scale = k + alpha / size * (sum of squares over ``size``
    channels, zero padded by (size - 1) / 2 each side); top = x * scale ** -beta (float64)."""
    pad = (size - 1) // 2
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (pad, pad), (0, 0), (0, 0)))
    windows = np.stack([sq[:, c : c + size].sum(1) for c in range(x.shape[1])], axis=1)
    return x * (k + alpha / size * windows) ** -beta


@pytest.mark.parametrize("alpha, beta", [(0.0, 0.75), (-0.1, 0.75), (0.5, 0.0), (0.5, -0.5)])
def test_lrn_across_with_alpha_or_beta_at_or_below_zero(layer_check, alpha, beta):
    """Valid in Caffe; ONNX Runtime's LRN refuses alpha <= 0 and beta <= 0 (the second found by
    the long fuzz run), so the ONNX model spells it out."""
    body = (
        f'layer {{ name: "n" type: "LRN" bottom: "data" top: "n" lrn_param {{ local_size: 3 '
        f"alpha: {alpha} beta: {beta} k: 2 }} }}"
    )
    layer_check(
        net(body),
        lambda feeds, _: {"n": caffe_lrn_across(feeds["data"], 3, alpha, beta, 2.0)},
        feeds=uniform(-1.0, 1.0),
        opencv=False,
    )
