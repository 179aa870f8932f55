"""Split, Concat, Flatten, Slice, Reshape, Crop and Tile move values exactly."""

from __future__ import annotations

import numpy as np
import pytest

X = np.arange(2 * 5 * 7 * 9, dtype=np.float64).reshape(2, 5, 7, 9)


def test_split_copies(run_layers):
    out = run_layers('layer { name: "s" type: "Split" bottom: "data" top: "a" top: "b" }', data=X)
    np.testing.assert_array_equal(out["a"], X)
    np.testing.assert_array_equal(out["b"], X)


@pytest.mark.parametrize(
    ("params", "axis"), [("axis: 1", 1), ("axis: -1", 3), ("concat_dim: 2", 2)]
)
def test_concat(run_layers, params, axis):
    shape = list(X.shape)
    shape[axis] = 3
    other = -np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    text = f'layer {{ name: "c" type: "Concat" bottom: "data" bottom: "o" top: "c" concat_param {{ {params} }} }}'
    out = run_layers(text, data=X, o=other)["c"]
    np.testing.assert_array_equal(out, np.concatenate([X, other], axis=axis))


def test_flatten_and_reshape(run_layers):
    text = (
        'layer { name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param { axis: 1 end_axis: 2 } }\n'
        'layer { name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }'
    )
    out = run_layers(text, data=X)
    np.testing.assert_array_equal(out["f"], X.reshape(2, 35, 9))
    np.testing.assert_array_equal(out["r"], X.reshape(2, 105, 3))


def test_slice_at_points_and_evenly(run_layers):
    text = (
        'layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" top: "c" slice_param { axis: 3 slice_point: 2 slice_point: 7 } }\n'
        'layer { name: "t" type: "Slice" bottom: "data" top: "d" top: "e" slice_param { slice_dim: 0 } }'
    )
    out = run_layers(text, data=X)
    np.testing.assert_array_equal(out["a"], X[..., :2])
    np.testing.assert_array_equal(out["b"], X[..., 2:7])
    np.testing.assert_array_equal(out["c"], X[..., 7:])
    np.testing.assert_array_equal(out["d"], X[:1])
    np.testing.assert_array_equal(out["e"], X[1:])


@pytest.mark.parametrize(
    ("params", "window"),
    [
        ("axis: 2 offset: 1 offset: 3", (slice(None), slice(None), slice(1, 4), slice(3, 7))),
        ("axis: 1 offset: 1", (slice(None), slice(1, 3), slice(1, 4), slice(1, 5))),
    ],
)
def test_crop(run_layers, params, window):
    like = np.zeros((2, 2, 3, 4))
    text = f'layer {{ name: "c" type: "Crop" bottom: "data" bottom: "like" top: "c" crop_param {{ {params} }} }}'
    out = run_layers(text, data=X, like=like)["c"]
    np.testing.assert_array_equal(out, X[window])


@pytest.mark.parametrize("axis", [1, 3])
def test_tile_repeats_the_block_from_axis(run_layers, axis):
    text = f'layer {{ name: "t" type: "Tile" bottom: "data" top: "t" tile_param {{ axis: {axis} tiles: 3 }} }}'
    out = run_layers(text, data=X)["t"]
    np.testing.assert_array_equal(out, np.concatenate([X, X, X], axis=axis))


# --- backward against central differences (Caffe's GradientChecker) ---------------------------

GRAD_X = np.random.default_rng(13).normal(size=(2, 3, 4, 5))


@pytest.mark.parametrize(
    "layers, extra",
    [
        ('layer { name: "s" type: "Split" bottom: "data" top: "a" top: "b" }', {}),
        (
            'layer { name: "c" type: "Concat" bottom: "data" bottom: "more" top: "c" '
            "concat_param { axis: 2 } }",
            {"more": (2, 3, 2, 5)},
        ),
        (
            'layer { name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param { axis: 2 } }',
            {},
        ),
        (
            'layer { name: "r" type: "Reshape" bottom: "data" top: "r" '
            "reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }",
            {},
        ),
        (
            'layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" top: "c" '
            "slice_param { axis: 3 slice_point: 1 slice_point: 3 } }",
            {},
        ),
        (
            'layer { name: "c" type: "Crop" bottom: "data" bottom: "small" top: "c" '
            "crop_param { axis: 2 offset: 1 offset: 2 } }",
            {"small": (2, 3, 3, 2)},
        ),
        (
            'layer { name: "t" type: "Tile" bottom: "data" top: "t" tile_param { axis: 1 tiles: 3 } }',
            {},
        ),
        ('layer { name: "s" type: "Silence" bottom: "data" bottom: "more" }', {"more": (2, 2)}),
        (
            'layer { name: "cc" type: "CropCenter" bottom: "data" top: "cc" '
            "crop_center_param { crop_size: 0 crop_size: 1 crop_size: 1 crop_size: 2 } }",
            {},
        ),
    ],
)
def test_backward(grad_check, layers, extra):
    rng = np.random.default_rng(14)
    arrays = {name: rng.normal(size=shape) for name, shape in extra.items()}
    grad_check(layers, data=GRAD_X, **arrays)


def test_crop_center_cuts_each_axis_from_both_ends(run_layers):
    """lltcggie/caffe's CropCenter: y = x[c0:-c0, c1:-c1, ...] (crop_center_layer.cpp)."""
    x = np.arange(3 * 4 * 5 * 7, dtype=np.float64).reshape(3, 4, 5, 7)
    text = (
        'layer { name: "cc" type: "CropCenter" bottom: "data" top: "cc" '
        "crop_center_param { crop_size: 1 crop_size: 0 crop_size: 2 crop_size: 3 } }"
    )
    out = run_layers(text, data=x)["cc"]
    assert out.shape == (1, 4, 1, 1)
    np.testing.assert_array_equal(out.reshape(-1), x[1, :, 2, 3])
    assert out.reshape(-1).tolist() == [x.size // 3 + k * 35 + 17 for k in range(4)]
