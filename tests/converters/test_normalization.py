"""BatchNorm (stored statistics times a factor, f == 0, batch statistics) and MVN, against OpenCV 4
and numpy versions of Caffe's batch_norm_layer and mvn_layer formulas."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net, uniform

CONV = 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 6 kernel_size: 3 } }\n'


def conv_ref(x, w, b):
    """Caffe's convolution (stride 1, no pad) in numpy, one kernel tap at a time."""
    k = w.shape[2]
    oh, ow = x.shape[2] - k + 1, x.shape[3] - k + 1
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(k):
        for j in range(k):
            y += np.einsum("nchw,oc->nohw", x[:, :, i : i + oh, j : j + ow], w[:, :, i, j])
    return y + b.reshape(1, -1, 1, 1)


def bn_stored(x, blobs, eps=1e-5):
    mean, var, f = (b.astype(np.float64) for b in blobs)
    factor = 0.0 if f[0] == 0 else 1.0 / f[0]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - (mean * factor).reshape(shape)) / np.sqrt((var * factor).reshape(shape) + eps)


def bn_batch(x, eps=1e-5):
    axes = tuple(i for i in range(x.ndim) if i != 1)
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)


def _x(inputs):
    return inputs["data"].astype(np.float64)


@pytest.mark.parametrize(
    "params", ["", "batch_norm_param { eps: 0.001 }", "batch_norm_param { use_global_stats: true }"]
)
def test_batch_norm_stored_statistics(layer_check, params):
    eps = 1e-3 if "eps" in params else 1e-5
    prototxt = net(f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" {params} }}')
    layer_check(prototxt, lambda i, w: {"bn": bn_stored(_x(i), w["bn"], eps)})


def test_batch_norm_zero_factor_means_zero_statistics(layer_check):
    rng = np.random.default_rng(1)
    blobs = {
        "bn": [
            rng.normal(size=5).astype(np.float32),
            rng.uniform(1, 2, 5).astype(np.float32),
            np.zeros(1, np.float32),
        ]
    }
    prototxt = net('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }')
    layer_check(prototxt, lambda i, w: {"bn": _x(i) / np.sqrt(1e-5)}, blobs=blobs, tol=1e-3)


def test_batch_norm_then_scale_in_place(layer_check):
    """The ResNet pattern: conv, then BatchNorm and Scale (with bias) both in place."""
    prototxt = net(
        CONV + 'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }\n'
        'layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }'
    )

    def expected(inputs, w):
        y = bn_stored(conv_ref(_x(inputs), *w["conv"]), w["bn"])
        return {"conv": y * w["sc"][0].reshape(1, -1, 1, 1) + w["sc"][1].reshape(1, -1, 1, 1)}

    layer_check(prototxt, expected)


def test_batch_norm_on_2d_bottom(layer_check):
    prototxt = net(
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 6 } }\n'
        'layer { name: "bn" type: "BatchNorm" bottom: "fc" top: "fc" }'
    )

    def expected(inputs, w):
        fc = (
            _x(inputs).reshape(len(inputs["data"]), -1) @ w["fc"][0].T.astype(np.float64)
            + w["fc"][1]
        )
        return {"fc": bn_stored(fc, w["bn"])}

    layer_check(prototxt, expected)


@pytest.mark.parametrize(
    "params",
    [
        "batch_norm_param { use_global_stats: false }",
        "phase: TRAIN",
        "phase: TRAIN batch_norm_param { use_global_stats: false eps: 0.01 }",
    ],
)
def test_batch_norm_batch_statistics(layer_check, params):
    """use_global_stats false (or unset in the TRAIN phase) normalises with the batch's own
    statistics, as Caffe does even in a TEST net; OpenCV only does so for batch 1."""
    eps = 0.01 if "eps" in params else 1e-5
    prototxt = net(f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" {params} }}')
    layer_check(prototxt, lambda i, w: {"bn": bn_batch(_x(i), eps)}, opencv=False)


def mvn(x, variance=True, across=False, eps=1e-9):
    axes = (1, 2, 3) if across else (2, 3)
    centred = x - x.mean(axis=axes, keepdims=True)
    if not variance:
        return centred
    return centred / (np.sqrt((centred**2).mean(axis=axes, keepdims=True)) + eps)


@pytest.mark.parametrize(
    ("params", "kwargs"),
    [
        ("", {}),
        ("mvn_param { across_channels: true }", {"across": True}),
        ("mvn_param { normalize_variance: false }", {"variance": False}),
        (
            "mvn_param { normalize_variance: false across_channels: true }",
            {"variance": False, "across": True},
        ),
        ("mvn_param { eps: 0.05 }", {"eps": 0.05}),
        ("mvn_param { eps: 0.05 across_channels: true }", {"eps": 0.05, "across": True}),
    ],
)
def test_mvn(layer_check, params, kwargs):
    """Caffe adds eps to the standard deviation; OpenCV adds it to the variance, which a large
    eps and a small input spread make visible: numpy alone is the reference there."""
    prototxt = net(f'layer {{ name: "m" type: "MVN" bottom: "data" top: "data2" {params} }}')
    expected = lambda i, w: {"data2": mvn(_x(i), **kwargs)}  # noqa: E731
    layer_check(prototxt, expected, feeds=uniform(-0.1, 0.2), opencv="eps" not in kwargs)


def test_mvn_in_place_after_conv(layer_check):
    prototxt = net(
        CONV
        + 'layer { name: "m" type: "MVN" bottom: "conv" top: "conv" mvn_param { across_channels: true } }'
    )
    layer_check(prototxt, lambda i, w: {"conv": mvn(conv_ref(_x(i), *w["conv"]), across=True)})


def test_mvn_of_2d_bottom_is_4d(layer_check):
    """Caffe reads a lower-rank bottom as N x C x H x W and shapes the top that way."""
    prototxt = net(
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 6 } }\n'
        'layer { name: "m" type: "MVN" bottom: "fc" top: "m" mvn_param { across_channels: true } }'
    )

    def expected(inputs, w):
        fc = (
            _x(inputs).reshape(len(inputs["data"]), -1) @ w["fc"][0].T.astype(np.float64)
            + w["fc"][1]
        )
        return {"m": mvn(fc[:, :, None, None], across=True)}

    reports = layer_check(prototxt, expected)
    assert any(c.value == "m" and c.reference == "stored" for c in reports[0].comparisons)


# --- in nets built for training (batch_norm_layer.cpp's TRAIN forward) ------------------------


@pytest.mark.parametrize("in_place", [False, True])
def test_batch_norm_training_forward_has_zero_mean_and_unit_variance(tmp_path, in_place):
    """TestForward / TestForwardInplace of Caffe's test_batch_norm_layer.cpp: per channel, the
    top's mean is 0 and its (biased) variance 1 within 0.001."""
    from _training import inputs_layer, make_net

    x = np.random.default_rng(3).normal(2.0, 3.0, size=(5, 2, 3, 4)).astype(np.float32)
    top = "data" if in_place else "bn"
    text = inputs_layer(data=x) + (
        f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "{top}" }}'
    )
    net = make_net(tmp_path, text)
    y = net.forward({"data": x})[top].numpy().astype(np.float64)
    for channel in range(2):
        values = y[:, channel]
        assert abs(values.mean()) < 1e-3
        assert abs((values * values).mean() - 1) < 1e-3


# --- BN, the forks' layer (docs/forks.md): caffe-segnet's and yjxiong's/PSPNet's -------------


def segnet_bn(x, scale, shift, mode):
    """caffe-segnet's bn_layer.cpp: INFERENCE scale * x + shift; LEARN with the batch's
    E(x^2) - E(x)^2 over (N, H, W) and eps 1e-9."""
    scale, shift = (b.astype(np.float64).reshape(1, -1, 1, 1) for b in (scale, shift))
    if mode == "INFERENCE":
        return x * scale + shift
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = (x * x).mean(axis=(0, 2, 3), keepdims=True) - mean**2
    return (x - mean) / np.sqrt(var + 1e-9) * scale + shift


def pspnet_bn(x, slope, bias, mean, var, eps=1e-5):
    """yjxiong's bn_layer.cpp (PSPNet) in TEST: slope * (x - mean) * (var + eps)^-1/2 + bias."""
    slope, bias, mean, var = (
        b.astype(np.float64).reshape(1, -1, 1, 1) for b in (slope, bias, mean, var)
    )
    return (x - mean) / np.sqrt(var + eps) * slope + bias


def bn_layer(params: str) -> str:
    return net(CONV + f'layer {{ name: "bn" type: "BN" bottom: "conv" top: "bn" {params} }}')


@pytest.mark.parametrize("mode", ["INFERENCE", "LEARN"])
def test_segnet_bn(layer_check, mode):
    def expected(inputs, weights):
        conv = conv_ref(inputs["data"].astype(np.float64), *weights["conv"])
        return {"bn": segnet_bn(conv, *weights["bn"], mode)}

    reports = layer_check(bn_layer(f"bn_param {{ bn_mode: {mode} }}"), expected, opencv=False)
    assert len(reports[0].comparisons) > 0


@pytest.mark.parametrize(
    "params", ["bn_param { frozen: true }", "bn_param { eps: 0.001 momentum: 0.95 }"]
)
def test_pspnet_bn(layer_check, params):
    eps = 0.001 if "eps" in params else 1e-5

    def expected(inputs, weights):
        conv = conv_ref(inputs["data"].astype(np.float64), *weights["conv"])
        return {"bn": pspnet_bn(conv, *weights["bn"], eps=np.float32(eps))}

    layer_check(bn_layer(params), expected, opencv=False)


def test_bn_with_four_blobs_is_pspnets(tmp_path, layer_check):
    """A BN naming no fork's own field is caffe-segnet's, unless its weights hold 4 blobs."""
    from caffe_compat.io.writer import definitions_only, write_caffemodel
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize

    prototxt = tmp_path / "psp.prototxt"
    (tmp_path / "frozen.prototxt").write_text(bn_layer("bn_param { frozen: true }"))
    weights = synthesize(load_net(tmp_path / "frozen.prototxt"))
    assert [b.shape for b in weights["bn"]] == [(1, 6, 1, 1)] * 4
    prototxt.write_text(bn_layer(""))
    assert load_net(prototxt).inference.params["bn"] == [(1, 6, 1, 1)] * 2
    model = tmp_path / "psp.caffemodel"
    write_caffemodel(model, definitions_only(load_net(prototxt).net.layer), weights)
    loaded = load_net(prototxt, model)
    assert any("4 blobs" in note for note in loaded.dialects)

    def expected(inputs, w):
        conv = conv_ref(inputs["data"].astype(np.float64), *w["conv"])
        return {"bn": pspnet_bn(conv, *w["bn"])}

    layer_check(bn_layer(""), expected, blobs=weights, opencv=False)
