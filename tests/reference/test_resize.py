"""Upsample and Interp (the forks' layers, docs/forks.md) against values worked by hand from
caffe-segnet's upsample_layer.cpp, the YOLOv3 ports' upsample and PSPNet's interp.cpp."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat.errors import CaffeCompatError


def unpool(params: str) -> str:
    return (
        'layer { name: "up" type: "Upsample" bottom: "data" bottom: "mask" top: "up" '
        f"upsample_param {{ {params} }} }}\n"
    )


def test_unpooling_writes_each_value_at_its_mask_index(run_layers):
    x = np.array([5.0, 6.0]).reshape(1, 1, 1, 2)
    mask = np.array([3.0, 0.0]).reshape(1, 1, 1, 2)
    out = run_layers(unpool("upsample_h: 2 upsample_w: 2"), data=x, mask=mask)["up"]
    np.testing.assert_array_equal(out[0, 0], [[6.0, 0.0], [0.0, 5.0]])


def test_unpooling_keeps_the_later_of_two_writes(run_layers):
    x = np.array([7.0, 8.0, 9.0]).reshape(1, 1, 1, 3)
    mask = np.array([1.0, 1.0, 5.0]).reshape(1, 1, 1, 3)
    out = run_layers(unpool("scale: 2"), data=x, mask=mask)["up"]  # 1 x 3 -> 2 x 6
    expected = np.zeros(12)
    expected[[1, 5]] = [8.0, 9.0]
    np.testing.assert_array_equal(out.reshape(-1), expected)


def test_unpooling_refuses_a_mask_past_the_plane(run_layers):
    x, mask = np.ones((1, 1, 1, 2)), np.array([0.0, 4.0]).reshape(1, 1, 1, 2)
    with pytest.raises((CaffeCompatError, ValueError), match="mask"):
        run_layers(unpool("upsample_h: 2 upsample_w: 2"), data=x, mask=mask)


def test_nearest_repeats_each_value(run_layers):
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    layer = (
        'layer { name: "up" type: "Upsample" bottom: "data" top: "up" upsample_param { scale: 2 } }'
    )
    out = run_layers(layer, data=x)["up"][0, 0]
    np.testing.assert_array_equal(out, [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])


def interp(params: str) -> str:
    return f'layer {{ name: "i" type: "Interp" bottom: "data" top: "i" interp_param {{ {params} }} }}\n'


def test_interp_zoom_on_the_align_corners_grid(run_layers):
    x = np.array([[0.0, 1.0], [2.0, 3.0]]).reshape(1, 1, 2, 2)
    out = run_layers(interp("zoom_factor: 2"), data=x)["i"][0, 0]  # 2 + 1 * (2 - 1) = 3
    np.testing.assert_allclose(out, [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]], rtol=1e-15)


def test_interp_shrink_samples_the_corners(run_layers):
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    out = run_layers(interp("shrink_factor: 2"), data=x)["i"][0, 0]  # (5 - 1) / 2 + 1 = 3
    np.testing.assert_allclose(out, x[0, 0, ::2, ::2], rtol=1e-15)


def test_interp_crops_before_resizing(run_layers):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out = run_layers(interp("pad_beg: -1 pad_end: -1 height: 2 width: 2"), data=x)["i"]
    np.testing.assert_array_equal(out[0, 0], x[0, 0, 1:3, 1:3])  # same size: a copy


def test_interp_settings_caffe_refuses(build):
    text = (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 '
        "dim: 4 dim: 4 } } }\n"
    )
    for params, field in (("pad_beg: 1 zoom_factor: 2", "pad_beg"), ("", "zoom_factor")):
        with pytest.raises(CaffeCompatError, match=field):
            build(text + interp(params))


@pytest.mark.parametrize("params", ["zoom_factor: 2", "height: 5 width: 3 pad_beg: -1"])
def test_interp_backward(grad_check, params):
    x = np.random.default_rng(4).normal(size=(2, 2, 4, 5))
    grad_check(interp(params), data=x)


def test_upsample_backward(grad_check):
    x = np.random.default_rng(5).normal(size=(2, 2, 3, 3))
    layer = (
        'layer { name: "up" type: "Upsample" bottom: "data" top: "up" upsample_param { scale: 2 } }'
    )
    grad_check(layer, data=x)


def test_interp_in_slabs_of_rows_matches_one_slab(run_layers, monkeypatch):
    """A top too large for full-size temporaries is built a few output rows at a time: the
    same values, to the bit, as in one slab."""
    from caffe_compat.reference import resize

    x = np.random.default_rng(4).standard_normal((2, 3, 5, 7))
    whole = run_layers(interp("height: 13 width: 17"), data=x)["i"]
    monkeypatch.setattr(resize, "INTERP_SLAB", 2 * 3 * 17 * 2)  # two output rows a slab
    sliced = run_layers(interp("height: 13 width: 17"), data=x)["i"]
    assert sliced.shape == (2, 3, 13, 17)
    np.testing.assert_array_equal(sliced, whole)
