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


# RCF's pattern: conv (3, pad 1), pool (2, stride 2), 1x1 conv, deconv (4, stride 2), AutoCrop to
# the image. Coordinate maps (util/coords.hpp), output from input: conv FilterMap(3, 1, 1).inv()
# = x; pool FilterMap(2, 2, 0).inv() = x / 2 - 1 / 4; deconv FilterMap(4, 2, 0) = 2x + 3 / 2.
# Deconv output from the image: 2 (x / 2 - 1 / 4) + 3 / 2 = x + 1: the crop starts at 1.
RCF_LIKE = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score" type: "Convolution" bottom: "pool" top: "score" convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "score" top: "up" convolution_param { num_output: 1 kernel_size: 4 stride: 2 } }
layer { name: "crop" type: "AutoCrop" bottom: "up" bottom: "data" top: "crop" }
"""


def test_auto_crop_offsets_come_from_the_coordinate_maps(build, run_layers):
    x = np.random.default_rng(5).normal(size=(1, 1, 10, 12))
    graph = build(
        'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 10 dim: 12 } } }\n'
        + RCF_LIKE
    )
    p = graph.node("crop").param.auto_crop_param
    assert (p.offset_h, p.offset_w) == (1, 1)
    assert graph.shapes["up"] == (1, 1, 12, 14)
    assert graph.shapes["crop"] == (1, 1, 10, 12)
    rng = np.random.default_rng(6)
    weights = {
        "conv": [rng.normal(size=(2, 1, 3, 3)), np.zeros(2)],
        "score": [rng.normal(size=(1, 2, 1, 1)), np.zeros(1)],
        "up": [rng.normal(size=(1, 1, 4, 4)), np.zeros(1)],
    }
    out = run_layers(RCF_LIKE, weights, outputs=["up", "crop"], data=x)
    np.testing.assert_array_equal(out["crop"], out["up"][:, :, 1:11, 1:13])


def test_auto_crop_refuses_a_layer_without_a_coordinate_map(build):
    from caffe_compat.errors import NetDefinitionError

    text = (
        'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 64 } }\n'
        'layer { name: "r" type: "Reshape" bottom: "ip" top: "r" reshape_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }\n'
        'layer { name: "crop" type: "AutoCrop" bottom: "r" bottom: "data" top: "crop" }\n'
    )
    with pytest.raises(NetDefinitionError, match=r'net.prototxt.*"crop" \(AutoCrop\).*Reshape'):
        build(text)


def test_auto_crop_backward(build):
    """Two upsamplings of one blob: 2x + 3 / 2 and 2x + 1 / 2, so the crop starts at 1."""
    from caffe_compat.reference.gradient_check import check_gradient

    layers = (
        'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 3 dim: 3 } } }\n'
        'layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" '
        "convolution_param { num_output: 1 kernel_size: 4 stride: 2 bias_term: false } }\n"
        'layer { name: "like" type: "Deconvolution" bottom: "data" top: "like" '
        "convolution_param { num_output: 1 kernel_size: 2 stride: 2 bias_term: false } }\n"
        'layer { name: "crop" type: "AutoCrop" bottom: "up" bottom: "like" top: "crop" }\n'
    )
    rng = np.random.default_rng(8)
    weights = {"up": [rng.normal(size=(1, 1, 4, 4))], "like": [rng.normal(size=(1, 1, 2, 2))]}
    graph = build(layers, weights, phase="TRAIN", training=True)
    assert graph.shapes["up"] == (1, 1, 8, 8) and graph.shapes["crop"] == (1, 1, 6, 6)
    feeds = {"data": rng.normal(size=(1, 1, 3, 3))}
    feeds |= {"up": rng.normal(size=(1, 1, 8, 8)), "like": rng.normal(size=(1, 1, 6, 6))}
    report = check_gradient(graph, feeds, "crop", step=1e-4, threshold=1e-5)
    assert report.passed, str(report)
    assert report.checked > 0
