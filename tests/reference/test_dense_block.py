"""DenseBlock (senlinuc/caffe_ocr) against values worked out from DenseBlock_layer.cpp's formulas:
BN_inf_Fwd ``scaler * (x - mean / f) / sqrt(var / f + 1e-5) + bias`` (the blobs as they are when
f == 0, the GPU path), ReLU, the true convolution ``y[h, w] = sum w[kh, kw] x[h + 1 - kh,
w + 1 - kw]`` (zero outside), and the concat of the old and new channels."""

from __future__ import annotations

import numpy as np
import pytest

EPS = 1e-5


def block(transitions: int = 1, growth: int = 1, extra: str = "") -> str:
    return (
        'layer { name: "db" type: "DenseBlock" bottom: "data" top: "db" denseblock_param { '
        f"numTransition: {transitions} growthRate: {growth} initChannel: 99 {extra} }} }}\n"
    )


def one_tap(kh: int, kw: int, value: float = 1.0) -> np.ndarray:
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, kh, kw] = value
    return w


def test_one_transition_by_hand(run_layers):
    x = np.arange(9.0).reshape(1, 1, 3, 3) - 3.0
    c = (1, 1, 1, 1)
    blobs = [one_tap(0, 0), np.full(c, 2.0), np.full(c, 0.5), np.full(c, 1.0), np.full(c, 3.0)]
    out = run_layers(block(), {"db": [*blobs, np.zeros(1)]}, data=x)["db"]
    assert out.shape == (1, 2, 3, 3)  # initChannel is ignored: C + T * g from the bottom
    np.testing.assert_array_equal(out[:, :1], x)
    bn = 2.0 * (x - 1.0) / np.sqrt(3.0 + EPS) + 0.5
    act = np.maximum(bn, 0.0)[0, 0]
    # the tap at (0, 0) reads x[h + 1, w + 1]: the picture moves up and left
    expected = np.zeros((3, 3))
    expected[:2, :2] = act[1:, 1:]
    np.testing.assert_allclose(out[0, 1], expected, rtol=1e-14)


def test_the_kernel_is_flipped_against_caffes_convolution(run_layers):
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 5))
    c = (1, 1, 1, 1)
    bn = [np.ones(c), np.zeros(c), np.zeros(c), np.full(c, 1.0 - EPS)]  # identity BN
    shifted = {}
    for tap in ((0, 0), (2, 2), (0, 2)):
        out = run_layers(block(), {"db": [one_tap(*tap), *bn, np.zeros(1)]}, data=x + 5.0)
        shifted[tap] = out["db"][0, 1]
    y = x[0, 0] + 5.0
    np.testing.assert_allclose(shifted[(0, 0)][:-1, :-1], y[1:, 1:], rtol=1e-12)
    np.testing.assert_allclose(shifted[(2, 2)][1:, 1:], y[:-1, :-1], rtol=1e-12)
    np.testing.assert_allclose(shifted[(0, 2)][:-1, 1:], y[1:, :-1], rtol=1e-12)
    assert shifted[(0, 0)][-1].tolist() == [0.0] * 5  # padding


@pytest.mark.parametrize("factor", [0.0, 4.0])
def test_two_transitions_and_the_factor(run_layers, factor):
    """Transition 1 reads both earlier channels; a nonzero factor divides the statistics."""
    x = np.array([[[[1.0, -2.0], [3.0, 0.5]]]])
    filt0 = one_tap(1, 1, 2.0)  # the centre tap: 2 * act
    filt1 = np.zeros((1, 2, 3, 3))
    filt1[0, 0, 1, 1], filt1[0, 1, 1, 1] = 1.0, -1.0
    s0, s1 = np.full((1, 1, 1, 1), 1.5), np.array([1.0, 0.5]).reshape(1, 2, 1, 1)
    b0, b1 = np.full((1, 1, 1, 1), -0.25), np.array([0.0, 1.0]).reshape(1, 2, 1, 1)
    m0, m1 = np.full((1, 1, 1, 1), 0.5), np.array([1.0, -1.0]).reshape(1, 2, 1, 1)
    v0, v1 = np.full((1, 1, 1, 1), 2.0), np.array([4.0, 0.25]).reshape(1, 2, 1, 1)
    blobs = [filt0, filt1, s0, s1, b0, b1, m0, m1, v0, v1, np.array([factor])]
    out = run_layers(block(2), {"db": blobs}, data=x)["db"]
    f = 1.0 if factor == 0 else 1.0 / factor
    x0 = x[0, 0]
    new0 = 2.0 * np.maximum(1.5 * (x0 - 0.5 * f) / np.sqrt(2.0 * f + EPS) - 0.25, 0)
    a = np.maximum(1.0 * (x0 - 1.0 * f) / np.sqrt(4.0 * f + EPS) + 0.0, 0)
    b = np.maximum(0.5 * (new0 + 1.0 * f) / np.sqrt(0.25 * f + EPS) + 1.0, 0)
    np.testing.assert_allclose(out[0], np.stack([x0, new0, a - b]), rtol=1e-13)


def test_bottleneck_by_hand(run_layers):
    """use_BC: BN, ReLU, 1x1 conv to 4g channels, BN, ReLU, then the 3x3 conv; BC's blobs
    follow the first five groups, the factor last."""
    x = np.array([[[[2.0, -1.0]], [[0.5, 3.0]]]])  # (1, 2, 1, 2)
    ones2, zeros2 = np.ones((1, 2, 1, 1)), np.zeros((1, 2, 1, 1))
    ones4, zeros4 = np.ones((1, 4, 1, 1)), np.zeros((1, 4, 1, 1))
    var2, var4 = np.full((1, 2, 1, 1), 1.0 - EPS), np.full((1, 4, 1, 1), 1.0 - EPS)
    w1 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]]).reshape(4, 2, 1, 1)
    w3 = np.zeros((1, 4, 3, 3))
    w3[0, :, 1, 1] = [1.0, 10.0, 100.0, 1000.0]
    bias4 = np.array([0.0, 0.0, -1.0, 0.0]).reshape(1, 4, 1, 1)
    blobs = [w3, ones2, zeros2, zeros2, var2, w1, ones4, bias4, zeros4, var4, np.zeros(1)]
    out = run_layers(block(1, 1, "use_BC: true"), {"db": blobs}, data=x)["db"]
    r = np.maximum(x[0, :, 0], 0)  # [[2, 0], [0.5, 3]]
    hidden = np.maximum(np.einsum("oc,cw->ow", w1[:, :, 0, 0], r) + bias4[0, :, 0], 0)
    expected = np.array([1.0, 10.0, 100.0, 1000.0]) @ hidden
    np.testing.assert_allclose(out[0, 2, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(expected, [2.0 + 5.0 + 150.0 + 1500.0, 30.0 + 200.0])


def test_backward_matches_central_differences(grad_check):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 4, 3))
    blobs = [rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((1, 3, 3, 3))]
    for _ in range(2):  # scalers, biases
        blobs += [rng.uniform(0.5, 1.5, (1, 2, 1, 1)), rng.uniform(0.5, 1.5, (1, 3, 1, 1))]
    blobs += [rng.standard_normal((1, 2, 1, 1)), rng.standard_normal((1, 3, 1, 1))]
    blobs += [rng.uniform(0.5, 2, (1, 2, 1, 1)), rng.uniform(0.5, 2, (1, 3, 1, 1))]
    grad_check(block(2), {"db": [*blobs, np.array([2.0])]}, data=x)
