"""ShuffleChannel, Reorg, Transpose and Reverse (the forks' layers, docs/forks.md) against the
forks' C++ loops written here in numpy, and OpenCV 4 where it reads the layer."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net


def layer(kind: str, params: str) -> str:
    return f'layer {{ name: "r" type: "{kind}" bottom: "data" top: "r" {params} }}'


@pytest.mark.parametrize("group", [2, 3])
def test_shuffle_channel(layer_check, group):
    def expected(feeds, _):
        x = feeds["data"].astype(np.float64)
        c = x.shape[1]
        out = np.empty_like(x)
        for i in range(group):  # Resize_cpu: input channel i * (C / g) + j -> j * g + i
            for j in range(c // group):
                out[:, j * group + i] = x[:, i * (c // group) + j]
        return {"r": out}

    body = layer("ShuffleChannel", f"shuffle_channel_param {{ group: {group} }}")
    layer_check(net(body, c=6), expected)


def highway_tiling(x, t):
    """TilingLayer::Forward_cpu of the highway-driving fork (VPGNet), value by value."""
    n, c, h, w = x.shape
    out = np.empty((n, c // (t * t), h * t, w * t), x.dtype)
    for b in range(n):
        for oc in range(c // (t * t)):
            for iy in range(h):
                for ix in range(w):
                    k = 0  # the input channel offset within this output channel's t^2
                    for ty in range(t):
                        for tx in range(t):
                            out[b, oc, iy * t + ty, ix * t + tx] = x[b, oc * t * t + k, iy, ix]
                            k += 1
    return out


@pytest.mark.parametrize("t", [2, 3])
def test_tiling(layer_check, t):
    def expected(feeds, _):
        return {"r": highway_tiling(feeds["data"].astype(np.float64), t)}

    # OpenCV has no Tiling layer: the fork's loop and the float64 reference judge
    body = layer("Tiling", f"tiling_param {{ tile_dim: {t} }}")
    layer_check(net(body, c=2 * t * t), expected, opencv=False)


def darknet_reorg(x, s):
    """reorg_cpu(bottom, w, h, c, batch, stride, forward=0, top) of the YOLOv2 ports."""
    n, c, h, w = x.shape
    src, out = x.reshape(n, -1), np.empty((n, x[0].size))
    cc = c // (s * s)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                offset = k // cc
                w2, h2 = i * s + offset % s, j * s + offset // s
                out[:, i + w * (j + h * k)] = src[:, w2 + w * s * (h2 + h * s * (k % cc))]
    return out.reshape(n, c * s * s, h // s, w // s)


def test_reorg(layer_check):
    def expected(feeds, _):
        return {"r": darknet_reorg(feeds["data"].astype(np.float64), 2)}

    layer_check(net(layer("Reorg", "reorg_param { stride: 2 }"), c=8, h=6, w=4), expected)


@pytest.mark.parametrize("dims", [(0, 3, 1, 2), (0, 2, 3, 1), (1, 0, 2, 3)])
def test_transpose(layer_check, dims):
    params = "transpose_param { " + " ".join(f"dim: {d}" for d in dims) + " }"

    def expected(feeds, _):
        return {"r": np.transpose(feeds["data"].astype(np.float64), dims)}

    layer_check(net(layer("Transpose", params)), expected, opencv=False)


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_reverse(layer_check, axis):
    def expected(feeds, _):
        x = feeds["data"].astype(np.float64)
        return {"r": x[(slice(None),) * axis + (slice(None, None, -1),)]}

    layer_check(net(layer("Reverse", f"reverse_param {{ axis: {axis} }}")), expected, opencv=False)


def bvlc_im2col(x, k, s, p, d):
    """im2col_cpu (BVLC util/im2col.cpp), position by position."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p - (d * (k - 1) + 1)) // s + 1, (w + 2 * p - (d * (k - 1) + 1)) // s + 1
    out = np.zeros((n, c * k * k, oh, ow))
    for ch in range(c):
        for i in range(k):
            for j in range(k):
                for y in range(oh):
                    for z in range(ow):
                        row, col = y * s - p + i * d, z * s - p + j * d
                        if 0 <= row < h and 0 <= col < w:
                            out[:, (ch * k + i) * k + j, y, z] = x[:, ch, row, col]
    return out


@pytest.mark.parametrize(
    ("params", "k", "s", "p", "d"),
    [
        ("kernel_size: 3 pad: 1", 3, 1, 1, 1),  # CTPN's
        ("kernel_size: 2 stride: 2", 2, 2, 0, 1),
        ("kernel_size: 3 stride: 2 pad: 2 dilation: 2", 3, 2, 2, 2),
    ],
)
def test_im2col(layer_check, params, k, s, p, d):
    """BVLC's Im2col (CTPN uses it before its BLSTM)."""

    def expected(feeds, _):
        return {"r": bvlc_im2col(feeds["data"].astype(np.float64), k, s, p, d)}

    body = layer("Im2col", f"convolution_param {{ {params} }}")
    layer_check(net(body, c=3), expected, opencv=False)


@pytest.mark.parametrize(
    ("params", "axes"),
    [
        ("", (3,)),
        ("flip_param { flip_height: true }", (2, 3)),
        ("flip_param { flip_width: false }", ()),
    ],
)
def test_flip(layer_check, params, axes):
    """happynear's Flip: width by default (flip_width true, flip_height false)."""

    def expected(feeds, _):
        x = feeds["data"].astype(np.float64)
        h, w = x.shape[2:]
        out = np.empty_like(x)
        for i in range(h):
            for j in range(w):
                out[:, :, i, j] = x[
                    :, :, h - 1 - i if 2 in axes else i, w - 1 - j if 3 in axes else j
                ]
        return {"r": out}

    layer_check(net(layer("Flip", params)), expected, opencv=False)
