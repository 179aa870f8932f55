"""ShuffleChannel, Reorg, Transpose and Reverse (docs/forks.md) on small blobs worked by hand
from the forks' C++, and their backward against central differences."""

from __future__ import annotations

import numpy as np
import pytest


def layer(kind: str, params: str) -> str:
    return f'layer {{ name: "r" type: "{kind}" bottom: "data" top: "r" {params} }}\n'


def test_shuffle_channel_interleaves_the_groups(run_layers):
    x = np.arange(6.0).reshape(1, 6, 1, 1)  # groups [0 1 2] [3 4 5]
    out = run_layers(layer("ShuffleChannel", "shuffle_channel_param { group: 2 }"), data=x)
    np.testing.assert_array_equal(out["r"].reshape(-1), [0, 3, 1, 4, 2, 5])


def test_reorg_reads_the_bottom_as_darknet_does(run_layers):
    """C 4, H 2, W 2, stride 2: C' = 1, the bottom read as 1 x 4 x 4 (values 0..15 row by row).
    Output (k, j, i) <- (0, 2j + k div 2, 2i + k mod 2): channel k takes offset (k div 2, k mod 2)
    of each 2 x 2 block of that 4 x 4 picture, and the top is the buffer as 16 x 1 x 1."""
    x = np.arange(16.0).reshape(1, 4, 2, 2)
    out = run_layers(layer("Reorg", "reorg_param { stride: 2 }"), data=x)["r"]
    assert out.shape == (1, 16, 1, 1)
    expected = [0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15]
    np.testing.assert_array_equal(out.reshape(-1), expected)


def test_transpose_and_reverse(run_layers):
    x = np.arange(6.0).reshape(1, 2, 3)
    out = run_layers(layer("Transpose", "transpose_param { dim: 2 dim: 0 dim: 1 }"), data=x)
    np.testing.assert_array_equal(out["r"], [[[0, 3]], [[1, 4]], [[2, 5]]])
    out = run_layers(layer("Reverse", "reverse_param { axis: 2 }"), data=x)
    np.testing.assert_array_equal(out["r"], [[[2, 1, 0], [5, 4, 3]]])


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("ShuffleChannel", "shuffle_channel_param { group: 4 }", "group"),
        ("Reorg", "reorg_param { stride: 3 }", "stride"),
        ("Transpose", "transpose_param { dim: 0 dim: 0 dim: 1 dim: 2 }", "dim"),
        ("Reverse", "reverse_param { axis: 4 }", "axis"),
        ("Tiling", "tiling_param { tile_dim: 0 }", "tile_dim"),
        ("Tiling", "tiling_param { tile_dim: 4 }", "tile_dim"),  # 6 channels, not 16k
    ],
)
def test_settings_the_forks_refuse(build, kind, params, field):
    from caffe_compat.errors import CaffeCompatError

    text = (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 6 '
        "dim: 4 dim: 4 } } }\n"
    )
    with pytest.raises(CaffeCompatError, match=field):
        build(text + layer(kind, params))


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("ShuffleChannel", "shuffle_channel_param { group: 3 }"),
        ("Reorg", "reorg_param { stride: 2 }"),
        ("Transpose", "transpose_param { dim: 0 dim: 3 dim: 1 dim: 2 }"),
        ("Reverse", "reverse_param { axis: 1 }"),
        ("Tiling", "tiling_param { tile_dim: 2 }"),
    ],
)
def test_backward(grad_check, kind, params):
    x = np.random.default_rng(6).normal(size=(2, 12, 2, 4))
    grad_check(layer(kind, params), data=x)


def test_im2col_by_hand(run_layers):
    """3 x 3 input, 2 x 2 kernel, stride 1, no pad: 4 columns, one per kernel tap (i, j),
    each the 2 x 2 grid of x[h + i, w + j]."""
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    out = run_layers(layer("Im2col", "convolution_param { kernel_size: 2 }"), data=x)["r"]
    expected = [[[0, 1], [3, 4]], [[1, 2], [4, 5]], [[3, 4], [6, 7]], [[4, 5], [7, 8]]]
    np.testing.assert_array_equal(out[0], expected)


def test_im2col_backward(grad_check):
    x = np.random.default_rng(7).normal(size=(2, 2, 5, 4))
    grad_check(layer("Im2col", "convolution_param { kernel_size: 3 stride: 2 pad: 1 }"), data=x)


def test_flip_by_hand(run_layers, grad_check):
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    out = run_layers(layer("Flip", "flip_param { flip_height: true }"), data=x)["r"]
    np.testing.assert_array_equal(out[0, 0], [[3, 2], [1, 0]])
    grad_check(layer("Flip", ""), data=np.random.default_rng(9).normal(size=(2, 2, 3, 4)))
