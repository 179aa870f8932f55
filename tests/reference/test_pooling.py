"""Pooling: the forward cases of Caffe's own test_pooling_layer.cpp (inputs and expected outputs
written out as facts), then Caffe's window rules checked by a per-window loop on odd shapes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from caffe_compat.errors import CaffeCompatError

# One 3 x 5 plane of TestForwardSquare (kernel 2, stride 1), its top and mask.
SQUARE = [[1, 2, 5, 2, 3], [9, 4, 1, 4, 8], [1, 2, 5, 2, 3]]
SQUARE_TOP = [[9, 5, 5, 8], [9, 5, 5, 8]]
SQUARE_MASK = [[5, 2, 2, 9], [5, 12, 12, 9]]
# One 6 x 6 plane of TestForwardRectHigh / RectWide.
RECT = [
    [35, 1, 6, 26, 19, 24],
    [3, 32, 7, 21, 23, 25],
    [31, 9, 2, 22, 27, 20],
    [8, 28, 33, 17, 10, 15],
    [30, 5, 34, 12, 14, 16],
    [4, 36, 29, 13, 18, 11],
]
HIGH_TOP = [[35, 32, 26, 27, 27], [32, 33, 33, 27, 27], [31, 34, 34, 27, 27], [36, 36, 34, 18, 18]]
HIGH_MASK = [[0, 7, 3, 16, 16], [7, 20, 20, 16, 16], [12, 26, 26, 16, 16], [31, 31, 26, 34, 34]]
WIDE_TOP = [
    [35, 32, 26, 26],
    [32, 32, 27, 27],
    [33, 33, 33, 27],
    [34, 34, 34, 17],
    [36, 36, 34, 18],
]
WIDE_MASK = [[0, 7, 3, 3], [7, 7, 16, 16], [20, 20, 20, 16], [26, 26, 26, 21], [31, 31, 26, 34]]


def pool(window: str, method: str = "MAX", tops: int = 1) -> str:
    names = " ".join(f'top: "p{i}"' for i in range(tops))
    return (
        f'layer {{ name: "p" type: "Pooling" bottom: "data" {names} '
        f"pooling_param {{ pool: {method} {window} }} }}"
    )


def planes(plane, num: int = 2, channels: int = 2) -> np.ndarray:
    """Caffe's tests repeat one plane over every (num, channel)."""
    return np.tile(np.array(plane, dtype=np.float32), (num, channels, 1, 1))


@pytest.mark.parametrize(
    ("window", "plane", "top", "mask"),
    [
        ("kernel_size: 2", SQUARE, SQUARE_TOP, SQUARE_MASK),
        ("kernel_h: 3 kernel_w: 2", RECT, HIGH_TOP, HIGH_MASK),
        ("kernel_h: 2 kernel_w: 3", RECT, WIDE_TOP, WIDE_MASK),
    ],
)
def test_caffe_max_cases_with_their_masks(run_layers, window, plane, top, mask):
    out = run_layers(pool(window, tops=2), data=planes(plane))
    np.testing.assert_array_equal(out["p0"], planes(top))
    np.testing.assert_array_equal(out["p1"], planes(mask))


def test_caffe_max_padded_case(run_layers):
    """TestForwardMaxPadded: kernel 3, stride 2, pad 2 on a 3 x 3 plane; padding never wins."""
    x = np.array([[[[1, 2, 4], [2, 3, 2], [4, 2, 1]]]], dtype=np.float32)
    out = run_layers(pool("kernel_size: 3 stride: 2 pad: 2"), data=x)["p0"]
    np.testing.assert_array_equal(out[0, 0], [[1, 4, 4], [4, 4, 4], [4, 4, 1]])


def test_caffe_ave_padded_case(run_layers):
    """TestForwardAve: a constant 2 plane, kernel 3, stride 1, pad 1: padding counts."""
    out = run_layers(
        pool("kernel_size: 3 stride: 1 pad: 1", "AVE"), data=np.full((1, 1, 3, 3), 2.0)
    )
    expected = [[8 / 9, 4 / 3, 8 / 9], [4 / 3, 2, 4 / 3], [8 / 9, 4 / 3, 8 / 9]]
    np.testing.assert_allclose(out["p0"][0, 0], expected, rtol=1e-15)


@pytest.mark.parametrize(
    ("window", "size"),
    [
        ("kernel_size: 3 stride: 2", (3, 2)),  # TestSetup on 6 x 5
        ("kernel_size: 3 stride: 2 pad: 1", (4, 3)),  # TestSetupPadded
        ("global_pooling: true", (1, 1)),  # TestSetupGlobalPooling
    ],
)
def test_caffe_setup_sizes(run_layers, window, size):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 5))
    assert run_layers(pool(window, "AVE"), data=x)["p0"].shape == (2, 3, *size)


def caffe_pool_loop(x, method, kernel, stride, pad, ceil=True):
    """PoolingLayer::Reshape and Forward_cpu, one window at a time."""
    n, c, height, width = x.shape
    outs = []
    for size, k, s, p in zip((height, width), kernel, stride, pad):
        rounding = math.ceil if ceil else math.floor
        out = rounding((size + 2 * p - k) / s) + 1
        if p and (out - 1) * s >= size + p:
            out -= 1
        outs.append(out)
    top = np.zeros((n, c, *outs))
    for ph, pw in itertools.product(range(outs[0]), range(outs[1])):
        hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
        he, we = min(hs + kernel[0], height + pad[0]), min(ws + kernel[1], width + pad[1])
        pool_size = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, height), min(we, width)
        window = x[:, :, hs:he, ws:we].reshape(n, c, -1)
        if method == "MAX":
            top[:, :, ph, pw] = window.max(axis=2)
        else:
            top[:, :, ph, pw] = window.sum(axis=2) / pool_size
    return top


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize(
    ("window", "kernel", "stride", "pad"),
    [
        ("kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),  # ceil overhang, no padding
        ("kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1)),  # overhang past the pad
        ("kernel_size: 2 stride: 2 pad: 1", (2, 2), (2, 2), (1, 1)),  # last window dropped
        (
            "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1",
            (3, 2),
            (2, 3),
            (1, 1),
        ),
        (
            "kernel_h: 4 kernel_w: 5 stride_h: 3 stride_w: 2 pad_h: 2 pad_w: 0",
            (4, 5),
            (3, 2),
            (2, 0),
        ),
        ("kernel_size: 7 stride: 1", (7, 7), (1, 1), (0, 0)),
    ],
)
def test_windows_on_an_odd_shape(run_layers, method, window, kernel, stride, pad):
    x = np.random.default_rng(1).standard_normal((2, 5, 7, 9))
    out = run_layers(pool(window, method), data=x)["p0"]
    expected = caffe_pool_loop(x, method, kernel, stride, pad)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-14)


def test_ave_divisor_counts_padding_but_not_the_ceil_overhang(run_layers):
    """4 x 4 ones, kernel 3, stride 2, pad 1 (ceil: 3 windows per axis): [-1, 2) [1, 4) [3, 6).
    The last is clipped to the padded input [-1, 5) for its divisor (2, not 3), then to the
    image [0, 4) for its sum; the first keeps its padded row in the divisor."""
    out = run_layers(pool("kernel_size: 3 stride: 2 pad: 1", "AVE"), data=np.ones((1, 1, 4, 4)))
    expected = np.outer([2 / 3, 3 / 3, 1 / 2], [2 / 3, 3 / 3, 1 / 2])
    np.testing.assert_allclose(out["p0"][0, 0], expected, rtol=1e-15)


def test_floor_round_mode(run_layers):
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 9))
    out = run_layers(pool("kernel_size: 3 stride: 2 round_mode: FLOOR", "AVE"), data=x)["p0"]
    np.testing.assert_allclose(out, caffe_pool_loop(x, "AVE", (3, 3), (2, 2), (0, 0), ceil=False))


def test_global_pooling_matches_the_mean_and_max(run_layers):
    x = np.random.default_rng(3).standard_normal((2, 5, 7, 9))
    ave = run_layers(pool("global_pooling: true", "AVE"), data=x)["p0"]
    top = run_layers(pool("global_pooling: true", "MAX"), data=x)["p0"]
    np.testing.assert_allclose(ave[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-13)
    np.testing.assert_array_equal(top[..., 0, 0], x.max(axis=(2, 3)))


def test_stochastic_pooling_is_refused_before_any_work(run_layers):
    with pytest.raises(CaffeCompatError, match=r"Pooling \[reference: STOCHASTIC.*\]: p"):
        run_layers(pool("kernel_size: 2", "STOCHASTIC"), data=np.ones((1, 1, 4, 4)))


# --- backward against central differences (Caffe's GradientChecker) ---------------------------


@pytest.mark.parametrize(
    "params",
    [
        "pool: MAX kernel_size: 3 stride: 2",
        "pool: MAX kernel_size: 3 pad: 1",
        "pool: MAX kernel_size: 2 stride: 3",
        "pool: AVE kernel_size: 3 stride: 2 pad: 1",
        "pool: AVE kernel_size: 2 stride: 3",
        "pool: AVE global_pooling: true",
        "pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1",
    ],
)
def test_backward(grad_check, params):
    grad_check(
        f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ {params} }} }}',
        data=np.random.default_rng(11).normal(size=(2, 3, 8, 7)),
    )


def test_max_backward_sends_a_tie_to_the_first_maximum_in_scan_order(build):
    from caffe_compat.reference.backward import forward_backward

    from .conftest import inputs_layer

    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 2.0
    graph = build(
        inputs_layer(data=x)
        + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" loss_weight: 1 '
        "pooling_param { pool: MAX kernel_size: 2 stride: 1 } }"
    )
    result = forward_backward(graph, {"data": x}, force_backward=True)
    expected = np.zeros((3, 3))
    expected[0, 1] = 2  # windows (0,0) and (0,1) pick (0,1); window (1,0) picks (1,0)
    expected[1, 0] = 1
    expected[1, 1] = 1  # window (1,1): (1,1)=0 ties (1,2), (2,1), (2,2): the first wins
    np.testing.assert_array_equal(result.diff("data")[0, 0], expected)


@pytest.mark.parametrize(
    ("settings", "size"),
    [
        ("ceil_mode: false", 2),  # the forks' field (docs/forks.md): floor
        ("ceil_mode: true", 3),
        ("ceil_mode: true round_mode: FLOOR", 3),  # the fork's field wins when set
        ("ceil_mode: false round_mode: CEIL", 2),
    ],
)
def test_fork_ceil_mode_rounds(run_layers, settings, size):
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    out = run_layers(pool(f"kernel_size: 2 stride: 2 {settings}", "MAX"), data=x)["p0"]
    # windows start at rows/cols 0, 2 (and 4 when rounding up): their maxima by hand
    expected = np.array([[6.0, 8.0, 9.0], [16.0, 18.0, 19.0], [21.0, 23.0, 24.0]])
    np.testing.assert_array_equal(out[0, 0], expected[:size, :size])


def test_darknet2caffe_extra_window_by_hand(run_layers):
    """odd_span_extra (ChenYingpeng/darknet2caffe): 3 x 3, kernel 2 stride 1 gives 3 x 3; the
    last row and column hold the maxima of the clipped windows."""
    x = np.array([[1.0, 5.0, 2.0], [7.0, 3.0, 9.0], [4.0, 8.0, 6.0]]).reshape(1, 1, 3, 3)
    text = 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 1 odd_span_extra: true } }'
    expected = [[7, 9, 9], [8, 9, 9], [8, 8, 6]]
    np.testing.assert_array_equal(run_layers(text, data=x)["p"][0, 0], expected)
