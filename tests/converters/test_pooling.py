"""Pooling against OpenCV 4: MAX and AVE, Caffe's ceil rounding, overhanging windows, non-square geometry."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize(
    "window",
    [
        "kernel_size: 3 stride: 2",  # ceil overhang without padding
        "kernel_size: 3 stride: 2 pad: 1",  # padding plus overhang
        "kernel_size: 2 stride: 2 pad: 1",  # last window starts in the padding: dropped
        "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1",
        "global_pooling: true",
    ],
)
def test_pooling(layer_parity, method, window):
    layer_parity(
        net(
            f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: {method} {window} }} }}'
        )
    )


def caffe_pool(x, method: str, k: int, s: int, pad: int, out_h: int, out_w: int):
    """Caffe's Forward_cpu loops (numpy over N and C): MAX starts at -FLT_MAX, AVE divides by the
    window clipped to the padded input, measured before clipping to the image."""
    n, c, h, w = x.shape
    top = np.empty((n, c, out_h, out_w), np.float32)
    for ph in range(out_h):
        for pw in range(out_w):
            hs, ws = ph * s - pad, pw * s - pad
            he, we = min(hs + k, h + pad), min(ws + k, w + pad)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we].reshape(n, c, -1)
            if method == "MAX":
                top[:, :, ph, pw] = np.maximum(window.max(-1, initial=-np.inf), -FLT_MAX)
            else:
                top[:, :, ph, pw] = window.sum(-1) / np.float32(size)
    return top


FLT_MAX = np.finfo(np.float32).max


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_windows_wholly_past_the_input(layer_check, method):
    """A stride beyond the kernel with ceil rounding and no padding: Caffe's last window starts
    past the input (MAX gives -FLT_MAX, AVE -0). ONNX Runtime refuses such end padding as a
    pool attribute, so the ONNX model pads explicitly. OpenCV gives 0 there: numpy reference."""
    body = f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: {method} kernel_size: 2 stride: 5 }} }}'
    # 7 x 9 input: 2 x 3 windows; the last column starts at 10, past the 9 columns.
    (report, *_) = layer_check(
        net(body),
        lambda feeds, _: {"p": caffe_pool(feeds["data"], method, 2, 5, 0, 2, 3)},
        opencv=False,
    )
    assert report.passed


def test_darknet2caffe_extra_window(layer_check):
    """darknet2caffe's pooling (odd_span_extra): kernel 2 stride 1 keeps 7 x 9, the last row
    and column of windows clipped at the edge (Caffe's loops, numpy). OpenCV lacks the field."""
    body = 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 1 odd_span_extra: true } }'
    (report, *_) = layer_check(
        net(body),
        lambda feeds, _: {"p": caffe_pool(feeds["data"], "MAX", 2, 1, 0, 7, 9)},
        opencv=False,
    )
    assert report.passed


# --- forks (docs/forks.md): the argmax mask as a second top (caffe-segnet) and ceil_mode ------


def caffe_mask(x, k: int, s: int, pad: int, out_h: int, out_w: int):
    """Caffe's MAX mask: the first maximum of each window (scan order, strictly greater) as the
    index h * W + w of the input plane."""
    n, c, h, w = x.shape
    mask = np.empty((n, c, out_h, out_w), np.float32)
    for ph in range(out_h):
        for pw in range(out_w):
            hs, ws = max(ph * s - pad, 0), max(pw * s - pad, 0)
            he, we = min(ph * s - pad + k, h), min(pw * s - pad + k, w)
            window = x[:, :, hs:he, ws:we].reshape(n, c, -1)
            first = window.argmax(-1)  # numpy's argmax also takes the first maximum
            rows, cols = hs + first // (we - ws), ws + first % (we - ws)
            mask[:, :, ph, pw] = rows * w + cols
    return mask


@pytest.mark.parametrize(
    ("window", "k", "s", "pad", "out"),
    [
        ("kernel_size: 2 stride: 2", 2, 2, 0, (4, 5)),  # SegNet's pools (ceil: last row/col)
        ("kernel_size: 3 stride: 2 pad: 1", 3, 2, 1, (4, 5)),
    ],
)
def test_max_pooling_mask_top(layer_check, window, k, s, pad, out):
    body = (
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "mask" '
        f"pooling_param {{ pool: MAX {window} }} }}"
    )

    def expected(feeds, _):
        x = feeds["data"]
        return {
            "p": caffe_pool(x, "MAX", k, s, pad, *out),
            "mask": caffe_mask(x, k, s, pad, *out),
        }

    layer_check(net(body), expected)


@pytest.mark.parametrize(("ceil_mode", "out"), [("false", (3, 4)), ("true", (4, 5))])
def test_fork_ceil_mode(layer_check, ceil_mode, out):
    """pooling_param { ceil_mode } of the DenseNet/DPN/ResNeXt ports: false rounds down."""
    body = (
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
        f"pooling_param {{ pool: AVE kernel_size: 2 stride: 2 ceil_mode: {ceil_mode} }} }}"
    )

    def expected(feeds, _):
        return {"p": caffe_pool(feeds["data"], "AVE", 2, 2, 0, *out)}

    layer_check(net(body), expected)
