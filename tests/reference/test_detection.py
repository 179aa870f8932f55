"""The SSD layers on cases worked out by hand: Permute, Normalize, PriorBox, and DetectionOutput
(decoding, per-class NMS with touching boxes, eta, keep_top_k, placeholder rows)."""

from __future__ import annotations

import math

import numpy as np
import pytest

RNG = np.random.default_rng(5)


@pytest.mark.parametrize(
    ("order", "axes"),
    [("order: 0 order: 2 order: 3 order: 1", (0, 2, 3, 1)), ("order: 0 order: 2", (0, 2, 1, 3))],
)
def test_permute_completes_the_order(run_layers, order, axes):
    x = RNG.standard_normal((2, 5, 7, 9))
    text = (
        f'layer {{ name: "p" type: "Permute" bottom: "data" top: "p" permute_param {{ {order} }} }}'
    )
    np.testing.assert_array_equal(run_layers(text, data=x)["p"], x.transpose(axes))


def test_normalize_per_position_with_channel_scales(run_layers):
    x = RNG.standard_normal((2, 5, 7, 9))
    scale = RNG.uniform(1, 20, 5)
    text = 'layer { name: "n" type: "Normalize" bottom: "data" top: "n" norm_param { across_spatial: false channel_shared: false eps: 0.5 } }'
    out = run_layers(text, {"n": [scale]}, data=x)["n"]
    norm = np.sqrt((x**2).sum(axis=1, keepdims=True) + 0.5)  # eps under the root
    np.testing.assert_allclose(out, x / norm * scale[None, :, None, None], rtol=1e-13)


def test_normalize_across_the_image_with_a_shared_scale(run_layers):
    x = RNG.standard_normal((2, 5, 7, 9))
    text = 'layer { name: "n" type: "Normalize" bottom: "data" top: "n" norm_param { across_spatial: true channel_shared: true eps: 0.5 } }'
    out = run_layers(text, {"n": [np.array(3.0)]}, data=x)["n"]
    norm = np.sqrt((x**2).sum(axis=(1, 2, 3), keepdims=True) + 0.5)
    np.testing.assert_allclose(out, 3 * x / norm, rtol=1e-13)


HAPPYNEAR = (
    'layer {{ name: "n" type: "Normalize" bottom: "data" top: "n" {tops}'
    'normalize_param {{ normalize_type: "{kind}" {extra}}} }}'
)


def test_happynear_normalize_l2_by_hand(run_layers):
    """normalize_layer.cpp (happynear/caffe-windows): per position, norm = sqrt(sum_c x^2 +
    1e-6), top = x / norm; no scale blob; the second top holds the norm (N x 1 x H x W)."""
    x = np.array([3.0, 4.0, 0.0, 0.0, -1.0, 2.0]).reshape(1, 3, 1, 2)  # columns (3,0,-1), (4,0,2)
    text = HAPPYNEAR.format(tops='top: "norm" ', kind="L2", extra="")
    out = run_layers(text, data=x)
    n0, n1 = math.sqrt(9 + 0 + 1 + 1e-6), math.sqrt(16 + 0 + 4 + 1e-6)
    np.testing.assert_allclose(out["norm"], np.array([n0, n1]).reshape(1, 1, 1, 2), rtol=1e-15)
    expected = np.array([3 / n0, 4 / n1, 0, 0, -1 / n0, 2 / n1]).reshape(1, 3, 1, 2)
    np.testing.assert_allclose(out["n"], expected, rtol=1e-15)


def test_happynear_normalize_l1_of_a_2d_bottom_is_4d(run_layers):
    """ "L1": norm = sum_c |x| + 1e-6; the fork reshapes top 0 to num x channels x height x width,
    so a fully connected feature (N x C) comes out N x C x 1 x 1."""
    x = np.array([[1.0, -3.0, 0.5], [0.0, 0.0, 0.0]])
    out = run_layers(HAPPYNEAR.format(tops="", kind="L1", extra=""), data=x)["n"]
    assert out.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(out[0, :, 0, 0], x[0] / (4.5 + 1e-6), rtol=1e-15)
    np.testing.assert_array_equal(out[1], 0.0)  # the eps keeps an all-zero feature finite


@pytest.mark.parametrize("kind", ["L2", "L1"])
@pytest.mark.parametrize("bp_norm", [False, True])
def test_happynear_normalize_backward(grad_check, kind, bp_norm):
    """The fork's backward is the derivative of top 0 (L1 away from 0, where its sign() kinks);
    the norm's diff joins it only with bp_norm, so without it the norm top is left out."""
    tops = 'top: "norm" ' if bp_norm else ""
    extra = "bp_norm: true " if bp_norm else ""
    grad_check(HAPPYNEAR.format(tops=tops, kind=kind, extra=extra), data=GRAD_X + np.sign(GRAD_X))


def test_happynear_normalize_without_bp_norm_ignores_the_norms_diff(build):
    """With two tops and no bp_norm the fork drops the norm's diff: not the derivative."""
    from caffe_compat.reference.gradient_check import check_gradient

    from .conftest import inputs_layer

    text = HAPPYNEAR.format(tops='top: "norm" ', kind="L2", extra="")
    graph = build(inputs_layer(data=GRAD_X) + text)
    report = check_gradient(graph, {"data": GRAD_X}, step=1e-4, threshold=1e-5)
    assert report.mismatches and {m.what for m in report.mismatches} == {"bottom 0"}


PRIOR = (
    'layer { name: "pb" type: "PriorBox" bottom: "map" bottom: "data" top: "pb" prior_box_param { '
    "min_size: 4 max_size: 8 aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1 variance: 0.2 "
    "variance: 0.2 %s } }"
)


@pytest.mark.parametrize("clip", [False, True])
def test_prior_boxes_by_hand(run_layers, clip):
    """A 2 x 2 map over an 8 x 8 image: step 4, centres 2 and 6. Per location: 4 x 4, then
    sqrt(4 * 8) square, then 4 sqrt2 x 4 / sqrt2 and its flip; corners over the image size."""
    text = PRIOR % ("clip: true" if clip else "")
    out = run_layers(text, map=np.zeros((1, 1, 2, 2)), data=np.zeros((1, 3, 8, 8)))["pb"]
    assert out.shape == (1, 2, 2 * 2 * 4 * 4)
    r2 = math.sqrt(2)
    sizes = [(4, 4), (math.sqrt(32), math.sqrt(32)), (4 * r2, 4 / r2), (4 / r2, 4 * r2)]
    boxes = []
    for cy in (2, 6):
        for cx in (2, 6):
            for w, h in sizes:
                boxes += [(cx - w / 2) / 8, (cy - h / 2) / 8, (cx + w / 2) / 8, (cy + h / 2) / 8]
    boxes = np.clip(boxes, 0, 1) if clip else np.array(boxes)
    np.testing.assert_allclose(out[0, 0], boxes, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[0, 0, :4], [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(out[0, 1], np.tile([0.1, 0.1, 0.2, 0.2], 16), rtol=1e-7)


def _corners(cx, cy, w, h, img_w, img_h):
    return [(cx - w) / img_w, (cy - h) / img_h, (cx + w) / img_w, (cy + h) / img_h]


def test_faceboxes_prior_boxes_by_hand(run_layers):
    """sfzhang15/FaceBoxes: a 1 x 2 map, step 32 over a 64 x 32 image: centres (16, 16) and
    (48, 16). min_size 32: 4 x 4 boxes shifted by 8 px (-16..8, rows outer), 64: 2 x 2 by 16 px
    (-16, 0), 128: one; each square half-side (min_size - 1) / 2; 21 priors per cell."""
    text = (
        'layer { name: "pb" type: "PriorBox" bottom: "map" bottom: "data" top: "pb" '
        "prior_box_param { min_size: 32 min_size: 64 min_size: 128 step: 32 "
        "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 layout: FACEBOXES } }"
    )
    out = run_layers(text, map=np.zeros((1, 1, 1, 2)), data=np.zeros((1, 3, 32, 64)))["pb"]
    assert out.shape == (1, 2, 2 * 21 * 4)
    boxes = []
    for cx in (16, 48):
        for i in (-16, -8, 0, 8):
            for j in (-16, -8, 0, 8):
                boxes += _corners(cx + j, 16 + i, 15.5, 15.5, 64, 32)
        for i in (-16, 0):
            for j in (-16, 0):
                boxes += _corners(cx + j, 16 + i, 31.5, 31.5, 64, 32)
        boxes += _corners(cx, 16, 63.5, 63.5, 64, 32)
    np.testing.assert_allclose(out[0, 0], boxes, rtol=1e-6, atol=1e-7)
    # the first prior: centre (16 - 16, 16 - 16), half-side 15.5
    np.testing.assert_allclose(out[0, 0, :4], [-15.5 / 64, -15.5 / 32, 15.5 / 64, 15.5 / 32])
    np.testing.assert_allclose(out[0, 1], np.tile([0.1, 0.1, 0.2, 0.2], 42), rtol=1e-7)


def test_faceboxes_prior_count_must_match_its_declaration(build):
    """The fork declares 21 priors for any three min sizes; 32/48/128 makes 18: refused."""
    text = inputs_layer_text(map=(1, 1, 2, 2), data=(1, 3, 64, 64)) + (
        'layer { name: "pb" type: "PriorBox" bottom: "map" bottom: "data" top: "pb" '
        "prior_box_param { min_size: 32 min_size: 48 min_size: 128 layout: FACEBOXES } }"
    )
    with pytest.raises(Exception, match="declares 21 priors per location but makes 18"):
        build(text)


def test_textboxes_prior_boxes_by_hand(run_layers):
    """MhLiao/TextBoxes: a 2 x 2 map over an 8 x 8 image (step 4). min_size 4.5 is kept as a
    float; sqrt(4.5 * 9) square; ratio 2 (no flip). Each prior at the cell centre (2 or 6) and
    again half a cell lower (4 or 8); clip cuts at 1."""
    text = (
        'layer { name: "pb" type: "PriorBox" bottom: "map" bottom: "data" top: "pb" '
        "prior_box_param { min_size: 4.5 max_size: 9 aspect_ratio: 2 flip: false clip: true "
        "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 layout: TEXTBOXES } }"
    )
    out = run_layers(text, map=np.zeros((1, 1, 2, 2)), data=np.zeros((1, 3, 8, 8)))["pb"]
    assert out.shape == (1, 2, 2 * 2 * 6 * 4)
    r2 = math.sqrt(2)
    sizes = [(4.5, 4.5), (math.sqrt(40.5),) * 2, (4.5 * r2, 4.5 / r2)]
    boxes = []
    for row in (0, 1):
        for cx in (2, 6):
            for w, h in sizes:
                for cy in (4 * row + 2, 4 * row + 4):
                    boxes += _corners(cx, cy, w / 2, h / 2, 8, 8)
    np.testing.assert_allclose(out[0, 0], np.clip(boxes, 0, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[0, 0, 4:8], [0, 1.75 / 8, 4.25 / 8, 6.25 / 8], rtol=1e-6)
    # the fork's caffe.proto defaults clip to true: unset, the boxes are clipped too
    unset = run_layers(
        text.replace("clip: true ", ""), map=np.zeros((1, 1, 2, 2)), data=np.zeros((1, 3, 8, 8))
    )["pb"]
    np.testing.assert_array_equal(unset, out)


def inputs_layer_text(**shapes) -> str:
    tops = " ".join(f'top: "{name}"' for name in shapes)
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes.values())
    return f'layer {{ name: "input" type: "Input" {tops} input_param {{ {dims} }} }}\n'


def detection_net(params: str) -> str:
    return (
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" '
        f'top: "det" detection_output_param {{ num_classes: 3 background_label_id: 0 {params} }} }}'
    )


A, B, C, D = [0, 0, 0.4, 0.4], [0.05, 0.05, 0.45, 0.45], [0.5, 0.5, 0.9, 0.9], [0.4, 0, 0.8, 0.4]
# Per prior: background, class 1, class 2. IoU(A, B) = 0.62; A and D only touch; C is apart.
CONF = [[0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.3, 0.2, 0.5], [0.2, 0.6, 0.2]]
C_LOC = [0.1, 0.2, -0.1, 0.3]  # with variance 0.1, C decodes to [0.51, 0.52, 0.89, 0.93]
C_BOX = [0.51, 0.52, 0.89, 0.93]


def priors(boxes, variance=(0.1, 0.1, 0.1, 0.1)) -> np.ndarray:
    return np.array([np.ravel(boxes), np.tile(variance, len(boxes))]).reshape(1, 2, -1)


def feeds(images: int = 2, low_second: bool = True) -> dict[str, np.ndarray]:
    loc = np.zeros((images, 4, 4))
    loc[:, 2] = C_LOC
    conf = np.tile(np.array(CONF), (images, 1, 1))
    if low_second:
        conf[1:] = 0.01  # nothing above the threshold in the later images
    return {
        "loc": loc.reshape(images, -1),
        "conf": conf.reshape(images, -1),
        "prior": priors([A, B, C, D]),
    }


def test_per_class_nms_and_ordering(run_layers):
    """Class 1: A (0.8) kept, B (IoU 0.62 > 0.5) dropped, D (touching A) and C kept.
    Class 2 (threshold 0.15): C (0.5), then B and D (0.2 each, lower prior first), all apart."""
    out = run_layers(
        detection_net("confidence_threshold: 0.15 nms_param { nms_threshold: 0.5 }"), **feeds()
    )["det"]
    expected = [
        [0, 1, 0.8, *A],
        [0, 1, 0.6, *D],
        [0, 1, 0.2, *C_BOX],
        [0, 2, 0.5, *C_BOX],
        [0, 2, 0.2, *B],
        [0, 2, 0.2, *D],
    ]
    assert out.shape == (1, 1, 6, 7)
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-12, atol=1e-15)


def test_keep_top_k_keeps_the_best_scores_grouped_by_label(run_layers):
    params = "confidence_threshold: 0.15 keep_top_k: 3 nms_param { nms_threshold: 0.5 }"
    out = run_layers(detection_net(params), **feeds(images=1))["det"]
    expected = [[0, 1, 0.8, *A], [0, 1, 0.6, *D], [0, 2, 0.5, *C_BOX]]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-12, atol=1e-15)


def test_top_k_limits_candidates_per_class(run_layers):
    params = "confidence_threshold: 0.15 nms_param { nms_threshold: 0.5 top_k: 1 }"
    out = run_layers(detection_net(params), **feeds(images=1))["det"]
    np.testing.assert_allclose(out[0, 0, :, :3], [[0, 1, 0.8], [0, 2, 0.5]])


def test_without_a_threshold_every_score_counts(run_layers):
    """Caffe's unset confidence_threshold is -FLT_MAX: a score of 0 is a detection."""
    inputs = {"loc": np.zeros((1, 4)), "conf": np.array([[0.0, 0.0, 0.0]]), "prior": priors([A])}
    out = run_layers(detection_net(""), **inputs)["det"]
    np.testing.assert_allclose(out[0, 0], [[0, 1, 0, *A], [0, 2, 0, *A]])


def test_placeholder_rows_when_nothing_is_kept(run_layers):
    params = "confidence_threshold: 0.95 nms_param { nms_threshold: 0.5 }"
    out = run_layers(detection_net(params), **feeds(images=3))["det"]
    expected = np.full((3, 7), -1.0)
    expected[:, 0] = [0, 1, 2]
    np.testing.assert_array_equal(out[0, 0], expected)


@pytest.mark.parametrize(("eta", "kept"), [(1.0, 2), (0.5, 1)])
def test_eta_lowers_the_threshold_after_each_kept_box(run_layers, eta, kept):
    """E overlaps A with IoU 0.09 / 0.23 = 0.39: under 0.6, over 0.6 * 0.5."""
    e = [0.1, 0.1, 0.5, 0.5]
    inputs = {
        "loc": np.zeros((1, 8)),
        "conf": np.array([[0.0, 0.9, 0.0, 0.0, 0.8, 0.0]]),
        "prior": priors([A, e]),
    }
    params = f"confidence_threshold: 0.01 nms_param {{ nms_threshold: 0.6 eta: {eta} }}"
    out = run_layers(detection_net(params), **inputs)["det"]
    assert out.shape[2] == kept


@pytest.mark.parametrize(
    ("code", "loc", "variance", "box"),
    [
        (
            "CENTER_SIZE",
            [1, -1, math.log(2) / 0.2, 0],
            (0.1, 0.1, 0.2, 0.2),
            [0.04, 0.18, 0.84, 0.38],
        ),
        ("CORNER_SIZE", [1, 1, 1, 1], (0.1, 0.1, 0.2, 0.2), [0.24, 0.22, 0.68, 0.44]),
        ("CORNER", [0.1, 0.2, 0.3, 0.4], (0.5, 0.5, 0.5, 0.5), [0.25, 0.3, 0.75, 0.6]),
    ],
)
def test_decoding(run_layers, code, loc, variance, box):
    """The prior [0.2, 0.2, 0.6, 0.4]: centre (0.4, 0.3), size 0.4 x 0.2."""
    inputs = {
        "loc": np.array([loc], dtype=np.float64),
        "conf": np.array([[0.0, 0.9, 0.0]]),
        "prior": priors([[0.2, 0.2, 0.6, 0.4]], variance),
    }
    params = f"code_type: {code} confidence_threshold: 0.01"
    out = run_layers(detection_net(params), **inputs)["det"]
    np.testing.assert_allclose(out[0, 0], [[0, 1, 0.9, *box]], rtol=1e-12, atol=1e-15)


def test_variance_encoded_in_target_ignores_the_prior_variances(run_layers):
    inputs = {
        "loc": np.array([[0.1, 0.2, 0.3, 0.4]]),
        "conf": np.array([[0.0, 0.9, 0.0]]),
        "prior": priors([[0.2, 0.2, 0.6, 0.4]], (5, 5, 5, 5)),
    }
    params = "code_type: CORNER variance_encoded_in_target: true confidence_threshold: 0.01"
    out = run_layers(detection_net(params), **inputs)["det"]
    np.testing.assert_allclose(out[0, 0, 0, 3:], [0.3, 0.4, 0.9, 0.8], rtol=1e-12)


def test_class_specific_locations(run_layers):
    """share_location false: each class decodes its own boxes (the background's are unused)."""
    loc = np.zeros((1, 1, 3, 4))
    loc[0, 0, 1] = [0.1, 0.1, 0.1, 0.1]
    loc[0, 0, 2] = [-0.1, -0.1, -0.1, -0.1]
    inputs = {
        "loc": loc.reshape(1, -1),
        "conf": np.array([[0.0, 0.9, 0.8]]),
        "prior": priors([[0.2, 0.2, 0.6, 0.4]], (1, 1, 1, 1)),
    }
    params = "share_location: false code_type: CORNER confidence_threshold: 0.01"
    out = run_layers(detection_net(params), **inputs)["det"]
    np.testing.assert_allclose(
        out[0, 0, :, 3:], [[0.3, 0.3, 0.7, 0.5], [0.1, 0.1, 0.5, 0.3]], rtol=1e-12
    )


# --- backward against central differences (the fork's formulas) -------------------------------

GRAD_X = np.random.default_rng(6).normal(size=(2, 3, 4, 5))


def test_permute_backward(grad_check):
    grad_check(
        'layer { name: "p" type: "Permute" bottom: "data" top: "p" '
        "permute_param { order: 0 order: 2 order: 3 order: 1 } }",
        data=GRAD_X,
    )


@pytest.mark.parametrize(
    "params, scale",
    [
        ("across_spatial: false channel_shared: true", np.array(1.7)),
        ("across_spatial: true channel_shared: true", np.array(0.6)),
        ("across_spatial: false channel_shared: false", np.full(3, 1.3)),
        ("across_spatial: true channel_shared: false", np.full(3, 2.0)),
    ],
)
def test_normalize_backward_where_it_is_the_derivative(grad_check, params, scale):
    grad_check(
        f'layer {{ name: "n" type: "Normalize" bottom: "data" top: "n" norm_param {{ {params} }} }}',
        {"n": [scale]},
        data=GRAD_X,
    )


def test_normalize_backward_with_distinct_channel_scales_is_the_forks_not_the_derivative(build):
    """The fork leaves the scales out of its dot product: with distinct per-channel scales its
    bottom diff is not the derivative (its scale diff still is)."""
    from caffe_compat.reference.gradient_check import check_gradient

    from .conftest import inputs_layer

    graph = build(
        inputs_layer(data=GRAD_X) + 'layer { name: "n" type: "Normalize" bottom: "data" top: "n" '
        "norm_param { across_spatial: false channel_shared: false } }",
        {"n": [np.array([0.5, 1.0, 2.0])]},
    )
    report = check_gradient(graph, {"data": GRAD_X}, step=1e-4, threshold=1e-5)
    assert report.mismatches and {m.what for m in report.mismatches} == {"bottom 0"}


def test_prior_box_sends_nothing_back(grad_check):
    grad_check(
        'layer { name: "pb" type: "PriorBox" bottom: "data" bottom: "image" top: "pb" '
        "prior_box_param { min_size: 4 } }",
        data=GRAD_X[:1, :2, :3, :3],
        image=np.random.default_rng(1).normal(size=(1, 3, 6, 6)),
    )
