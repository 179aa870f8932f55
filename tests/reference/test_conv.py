"""Convolution and Deconvolution: the cases of Caffe's test_convolution_layer.cpp and
test_deconvolution_layer.cpp that hold facts (shapes, the overlapping-accumulation values,
Sobel = two separable filters, 0-D convolution), then a tap-by-tap loop written from Caffe's
definition on shapes where N, C, H and W all differ."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

RNG = np.random.default_rng(2026)


def conv(params: str, kind: str = "Convolution", bottoms=("data",), name="c") -> str:
    wiring = (
        " ".join(f'bottom: "{b}"' for b in bottoms)
        + " "
        + " ".join(f'top: "{name}{i}"' for i in range(len(bottoms)))
    )
    return f'layer {{ name: "{name}" type: "{kind}" {wiring} convolution_param {{ {params} }} }}\n'


def out_size(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def conv_loop(x, w, b, stride, pad, dilation, group):
    """y[n, o, pos] = b[o] + sum over taps and the group's channels of w * x at
    pos * stride - pad + tap * dilation, taps outside the input contributing nothing."""
    n, c, *spatial = x.shape
    o, _, *kernel = w.shape
    out = [out_size(*a) for a in zip(spatial, kernel, stride, pad, dilation)]
    cg, og = c // group, o // group
    y = np.zeros((n, o, *out))
    for pos in itertools.product(*map(range, out)):
        for tap in itertools.product(*map(range, kernel)):
            src = [q * s - p + t * d for q, s, p, t, d in zip(pos, stride, pad, tap, dilation)]
            if not all(0 <= i < size for i, size in zip(src, spatial)):
                continue
            column = x[(slice(None), slice(None), *src)]
            for g in range(group):
                weight = w[(slice(g * og, (g + 1) * og), slice(None), *tap)]
                y[(slice(None), slice(g * og, (g + 1) * og), *pos)] += (
                    column[:, g * cg : (g + 1) * cg] @ weight.T
                )
    return y if b is None else y + b.reshape(1, -1, *[1] * len(out))


def deconv_loop(x, w, b, stride, pad, dilation, group):
    """Each input value, times the kernel, is added at pos * stride - pad + tap * dilation;
    w is (C_in, C_out / group, *kernel) as Caffe stores it."""
    n, c, *spatial = x.shape
    _, og, *kernel = w.shape
    out = [
        s * (size - 1) + d * (k - 1) + 1 - 2 * p
        for size, k, s, p, d in zip(spatial, kernel, stride, pad, dilation)
    ]
    cg = c // group
    y = np.zeros((n, og * group, *out))
    for pos in itertools.product(*map(range, spatial)):
        for tap in itertools.product(*map(range, kernel)):
            dst = [q * s - p + t * d for q, s, p, t, d in zip(pos, stride, pad, tap, dilation)]
            if not all(0 <= i < size for i, size in zip(dst, out)):
                continue
            for g in range(group):
                value = x[(slice(None), slice(g * cg, (g + 1) * cg), *pos)]
                weight = w[(slice(g * cg, (g + 1) * cg), slice(None), *tap)]
                y[(slice(None), slice(g * og, (g + 1) * og), *dst)] += value @ weight
    return y if b is None else y + b.reshape(1, -1, *[1] * len(out))


def test_caffe_setup_shapes(run_layers):
    """TestSetup: 2 x 3 x 6 x 4 bottoms, kernel 3, stride 2: 4 x 2 x 1, and with group 3."""
    x = RNG.standard_normal((2, 3, 6, 4))
    for params, blobs in [
        ("num_output: 4 kernel_size: 3 stride: 2", [np.ones((4, 3, 3, 3)), np.zeros(4)]),
        ("num_output: 3 kernel_size: 3 stride: 2 group: 3", [np.ones((3, 1, 3, 3)), np.zeros(3)]),
    ]:
        out = run_layers(conv(params, bottoms=("data", "data2")), {"c": blobs}, data=x, data2=x)
        assert out["c0"].shape == out["c1"].shape == (2, blobs[0].shape[0], 2, 1)


def test_caffe_simple_deconvolution_accumulates_overlaps(run_layers):
    """TestSimpleDeconvolution: ones through a 3 x 3, stride 2 deconvolution of ones with bias
    0.1 give 3.1, plus 3 where two taps overlap along one axis and 9 along both."""
    ones = np.ones((2, 3, 6, 4))
    blobs = [np.ones((3, 4, 3, 3)), np.full(4, 0.1)]
    params = "num_output: 4 kernel_size: 3 stride: 2"
    out = run_layers(
        conv(params, "Deconvolution", bottoms=("data", "data2")),
        {"c": blobs},
        data=ones,
        data2=ones,
    )
    for top in (out["c0"], out["c1"]):
        assert top.shape == (2, 4, 13, 9)
        h_overlap = np.array([h % 2 == 0 and 0 < h < 12 for h in range(13)])
        w_overlap = np.array([w % 2 == 0 and 0 < w < 8 for w in range(9)])
        both = h_overlap[:, None] & w_overlap[None, :]
        either = h_overlap[:, None] ^ w_overlap[None, :]
        expected = 3.1 + 9 * both + 3 * either
        np.testing.assert_allclose(top, np.broadcast_to(expected, top.shape), rtol=1e-14)


def test_caffe_sobel_equals_its_separable_filters(run_layers):
    """TestSobelConvolution: the 3 x 3 Sobel G_x (stride 2) equals [1 2 1] down (stride 2, 1)
    then [-1 0 1] across (stride 1, 2)."""
    x = RNG.standard_normal((2, 3, 6, 4))
    sobel = np.tile(np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float), (1, 3, 1, 1))
    full = run_layers(
        conv("num_output: 1 bias_term: false kernel_size: 3 stride: 2"), {"c": [sobel]}, data=x
    )["c0"]
    layers = conv(
        "num_output: 1 bias_term: false kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 1"
    ) + conv(
        "num_output: 1 bias_term: false kernel_h: 1 kernel_w: 3 stride_h: 1 stride_w: 2",
        bottoms=("c0",),
        name="d",
    )
    column = np.tile(np.array([1.0, 2, 1]).reshape(1, 1, 3, 1), (1, 3, 1, 1))
    row = np.array([-1.0, 0, 1]).reshape(1, 1, 1, 3)
    separable = run_layers(layers, {"c": [column], "d": [row]}, data=x)["d0"]
    assert full.shape == separable.shape == (2, 1, 2, 1)
    np.testing.assert_allclose(full, separable, rtol=1e-13)


def test_caffe_0d_convolution_is_a_dense_layer_on_the_last_axis(run_layers):
    """Test0DConvolution: axis 3 leaves no spatial axis: top[..., d] = b[d] + W[d] . x[...]."""
    x = RNG.standard_normal((2, 3, 6, 4))
    weight, bias = RNG.standard_normal((3, 4)), RNG.standard_normal(3)
    out = run_layers(conv("num_output: 3 axis: 3"), {"c": [weight, bias]}, data=x)["c0"]
    assert out.shape == (2, 3, 6, 3)
    np.testing.assert_allclose(out, np.einsum("nchk,dk->nchd", x, weight) + bias, rtol=1e-13)


CONV_CASES = [
    # params, channels, group, kernel, stride, pad, dilation
    ("kernel_size: 3", 6, 1, (3, 3), (1, 1), (0, 0), (1, 1)),
    (
        "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
        6,
        1,
        (3, 2),
        (2, 1),
        (1, 0),
        (1, 1),
    ),
    ("kernel_size: 3 dilation: 2 pad: 2 group: 3", 6, 3, (3, 3), (1, 1), (2, 2), (2, 2)),
    (
        "kernel_size: 3 kernel_size: 2 stride: 2 stride: 3 pad: 2 pad: 1 dilation: 1 dilation: 2 group: 2",
        6,
        2,
        (3, 2),
        (2, 3),
        (2, 1),
        (1, 2),
    ),
    ("kernel_size: 1 bias_term: false", 6, 1, (1, 1), (1, 1), (0, 0), (1, 1)),
]


@pytest.mark.parametrize(
    ("params", "channels", "group", "kernel", "stride", "pad", "dilation"), CONV_CASES
)
def test_convolution_on_an_odd_shape(
    run_layers, params, channels, group, kernel, stride, pad, dilation
):
    x = RNG.standard_normal((2, channels, 7, 9))
    w = RNG.standard_normal((4 * group, channels // group, *kernel))
    b = None if "bias_term: false" in params else RNG.standard_normal(4 * group)
    blobs = [w] if b is None else [w, b]
    out = run_layers(conv(f"num_output: {4 * group} {params}"), {"c": blobs}, data=x)["c0"]
    expected = conv_loop(x, w, b, stride, pad, dilation, group)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("params", "channels", "group", "kernel", "stride", "pad", "dilation"), CONV_CASES
)
@pytest.mark.parametrize("slab", [1, 200])
def test_convolution_in_slabs_of_output_rows(
    run_layers, monkeypatch, slab, params, channels, group, kernel, stride, pad, dilation
):
    """Columns built a few output rows at a time (one row where a slab holds less, one item at
    a time where one row of every item is more) give the same values as the loop: a big map's
    scratch is bounded, not its result."""
    from caffe_compat.shapes import conv as conv_shapes

    monkeypatch.setattr(conv_shapes, "COLUMN_SLAB", slab)
    x = RNG.standard_normal((2, channels, 7, 9))
    w = RNG.standard_normal((4 * group, channels // group, *kernel))
    b = None if "bias_term: false" in params else RNG.standard_normal(4 * group)
    blobs = [w] if b is None else [w, b]
    out = run_layers(conv(f"num_output: {4 * group} {params}"), {"c": blobs}, data=x)["c0"]
    rows = conv_shapes.column_rows(channels, kernel, 2, out.shape[2:])
    assert rows < out.shape[2]  # more than one slab
    items = conv_shapes.column_items(channels, kernel, 2, out.shape[2:])
    assert slab != 1 or items == 1  # one row of both items is more than one value
    expected = conv_loop(x, w, b, stride, pad, dilation, group)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "params", "kernel", "stride", "pad", "dilation"),
    [
        ((2, 3, 11), "kernel_size: 3 stride: 2 pad: 1", (3,), (2,), (1,), (1,)),
        (
            (2, 3, 5, 6, 7),
            "kernel_size: 3 kernel_size: 2 kernel_size: 3 stride: 2 pad: 1 dilation: 1 dilation: 2 dilation: 1",
            (3, 2, 3),
            (2, 2, 2),
            (1, 1, 1),
            (1, 2, 1),
        ),
    ],
)
def test_one_and_three_spatial_axes(run_layers, shape, params, kernel, stride, pad, dilation):
    x = RNG.standard_normal(shape)
    w, b = RNG.standard_normal((4, shape[1], *kernel)), RNG.standard_normal(4)
    out = run_layers(conv(f"num_output: 4 {params}"), {"c": [w, b]}, data=x)["c0"]
    np.testing.assert_allclose(
        out, conv_loop(x, w, b, stride, pad, dilation, 1), rtol=1e-12, atol=1e-12
    )


def test_convolution_over_axis_2_treats_the_leading_axes_as_images(run_layers):
    x = RNG.standard_normal((2, 3, 5, 8))  # images (2, 3), channels 5, one spatial axis of 8
    w, b = RNG.standard_normal((4, 5, 3)), RNG.standard_normal(4)
    out = run_layers(conv("num_output: 4 kernel_size: 3 axis: 2"), {"c": [w, b]}, data=x)["c0"]
    expected = conv_loop(x.reshape(6, 5, 8), w, b, (1,), (0,), (1,), 1).reshape(2, 3, 4, 6)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


DECONV_CASES = [
    ("kernel_size: 3 stride: 2 pad: 1", 1, (3, 3), (2, 2), (1, 1), (1, 1)),
    (
        "kernel_h: 4 kernel_w: 3 stride_h: 3 stride_w: 2 pad_h: 2 pad_w: 1",
        1,
        (4, 3),
        (3, 2),
        (2, 1),
        (1, 1),
    ),
    ("kernel_size: 3 stride: 2 pad: 1 dilation: 2 group: 2", 2, (3, 3), (2, 2), (1, 1), (2, 2)),
]


@pytest.mark.parametrize(("params", "group", "kernel", "stride", "pad", "dilation"), DECONV_CASES)
def test_deconvolution_on_an_odd_shape(run_layers, params, group, kernel, stride, pad, dilation):
    x = RNG.standard_normal((2, 6, 5, 7))
    w, b = RNG.standard_normal((6, 3, *kernel)), RNG.standard_normal(3 * group)
    out = run_layers(
        conv(f"num_output: {3 * group} {params}", "Deconvolution"), {"c": [w, b]}, data=x
    )["c0"]
    expected = deconv_loop(x, w, b, stride, pad, dilation, group)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("params", "group", "kernel", "stride", "pad", "dilation"), DECONV_CASES)
@pytest.mark.parametrize("slab", [1, 100])
def test_deconvolution_in_slabs_of_input_rows(
    run_layers, monkeypatch, slab, params, group, kernel, stride, pad, dilation
):
    """Columns made a few input rows at a time and added where their taps land give the loop's
    values: overlapping taps of neighbouring slabs sum as col2im sums them."""
    from caffe_compat.shapes import conv as conv_shapes

    monkeypatch.setattr(conv_shapes, "COLUMN_SLAB", slab)
    x = RNG.standard_normal((2, 6, 5, 7))
    w, b = RNG.standard_normal((6, 3, *kernel)), RNG.standard_normal(3 * group)
    assert conv_shapes.deconv_rows(3 * group, kernel, 2, (5, 7)) < 5  # more than one slab
    out = run_layers(
        conv(f"num_output: {3 * group} {params}", "Deconvolution"), {"c": [w, b]}, data=x
    )["c0"]
    expected = deconv_loop(x, w, b, stride, pad, dilation, group)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["ConvolutionDepthwise", "DepthwiseConvolution"])
def test_depthwise_aliases_are_one_group_per_channel(run_layers, kind):
    x = RNG.standard_normal((2, 5, 7, 9))
    w, b = RNG.standard_normal((5, 1, 3, 3)), RNG.standard_normal(5)
    out = run_layers(
        conv("num_output: 5 kernel_size: 3 stride: 2 pad: 1", kind), {"c": [w, b]}, data=x
    )
    expected = conv_loop(x, w, b, (2, 2), (1, 1), (1, 1), 5)
    np.testing.assert_allclose(out["c0"], expected, rtol=1e-12, atol=1e-12)


# --- backward against central differences (Caffe's GradientChecker) ---------------------------

GRAD_X = np.random.default_rng(5).normal(size=(2, 3, 5, 4))


@pytest.mark.parametrize(
    "kind, params, weight, bias",
    [
        ("Convolution", "num_output: 4 kernel_size: 2 stride: 2 pad: 1", (4, 3, 2, 2), 4),
        (
            "Convolution",
            "num_output: 6 kernel_size: 3 group: 3 dilation: 2 pad: 1",
            (6, 1, 3, 3),
            6,
        ),
        (
            "Convolution",
            "num_output: 2 kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 1 bias_term: false",
            (2, 3, 3, 1),
            0,
        ),
        ("Deconvolution", "num_output: 4 kernel_size: 3 stride: 2 pad: 1", (3, 4, 3, 3), 4),
        ("Deconvolution", "num_output: 6 kernel_size: 2 stride: 2 group: 3", (3, 2, 2, 2), 6),
    ],
)
def test_backward(grad_check, kind, params, weight, bias):
    rng = np.random.default_rng(2)
    blobs = [rng.normal(size=weight)] + ([rng.normal(size=bias)] if bias else [])
    grad_check(conv(params, kind), {"c": blobs}, data=GRAD_X)


def test_backward_with_two_bottoms_sharing_the_weights(grad_check):
    rng = np.random.default_rng(3)
    blobs = [rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2)]
    grad_check(
        conv("num_output: 2 kernel_size: 3", bottoms=("data", "more")),
        {"c": blobs},
        data=GRAD_X,
        more=GRAD_X[::-1].copy(),
    )


def test_backward_of_a_3d_convolution(grad_check):
    rng = np.random.default_rng(4)
    blobs = [rng.normal(size=(2, 2, 2, 2, 2)), rng.normal(size=2)]
    grad_check(
        conv("num_output: 2 kernel_size: 2 stride: 2"),
        {"c": blobs},
        data=rng.normal(size=(1, 2, 3, 4, 5)),
    )
