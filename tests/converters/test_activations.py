"""Pointwise layers (ReLU, Dropout, Power, Exp, Log, AbsVal, Sigmoid, TanH, ELU, PReLU, BNLL, Threshold, Clip,
Swish), each applied once out of place and once in place, against OpenCV 4 (where it has the
layer) and a numpy version of Caffe's formula, at the prototxt's batch and at batch 3."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net, uniform

from caffe_compat.verify.opencv import opencv_caffe_available


def twice(layer_type: str, params: str = "") -> str:
    """The layer once out of place (data -> y) and once in place (y -> y)."""
    return net(
        f'layer {{ name: "a" type: "{layer_type}" bottom: "data" top: "y" {params} }}\n'
        f'layer {{ name: "b" type: "{layer_type}" bottom: "y" top: "y" {params} }}'
    )


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# (layer type, params, numpy formula of one application, feeds or None, has an OpenCV layer)
CASES = [
    ("ReLU", "", lambda x: np.maximum(x, 0), None, True),
    (
        "ReLU",
        "relu_param { negative_slope: 0.1 }",
        lambda x: np.where(x > 0, x, 0.1 * x),
        None,
        True,
    ),
    ("Dropout", "dropout_param { dropout_ratio: 0.3 }", lambda x: x, None, True),
    # caffe-segnet's Monte Carlo dropout, compared at its expected value (verify's mode).
    (
        "Dropout",
        "dropout_param { dropout_ratio: 0.3 sample_weights_test: true }",
        lambda x: x,
        None,
        True,
    ),
    # caffe-fast-rcnn's scale_train: false: its TEST forward scales by 1. / scale_ (Fast R-CNN's
    # ZF and VGG_CNN_M_1024 test nets); OpenCV 4 reads the same field.
    (
        "Dropout",
        "dropout_param { dropout_ratio: 0.3 scale_train: false }",
        lambda x: x * np.float32(1.0 / np.float32(1.0 / (1.0 - np.float32(0.3)))),
        None,
        True,
    ),
    (
        "Power",
        "power_param { power: 2 scale: 0.5 shift: 1 }",
        lambda x: (1 + 0.5 * x) ** 2,
        None,
        True,
    ),
    (
        "Power",
        "power_param { power: 0.5 scale: 2 shift: 0.25 }",
        lambda x: (0.25 + 2 * x) ** 0.5,
        uniform(0, 3),
        True,
    ),
    ("Power", "power_param { power: -1.5 }", lambda x: x**-1.5, uniform(0.5, 2), True),
    (
        "Power",
        "power_param { power: 3 scale: 0 shift: 1.5 }",
        lambda x: np.full_like(x, 1.5**3),
        None,
        True,
    ),
    ("Power", "power_param { power: 0 scale: 2 }", lambda x: np.ones_like(x), None, True),
    ("Exp", "", np.exp, uniform(-2, 1), True),
    (
        "Exp",
        "exp_param { base: 2 scale: 0.5 shift: 0.3 }",
        lambda x: 2 ** (0.3 + 0.5 * x),
        None,
        True,
    ),
    ("Log", "", np.log, uniform(1.5, 5), True),
    # OpenCV ignores log_param (it always computes ln x): numpy is the reference here.
    (
        "Log",
        "log_param { base: 10 scale: 2 shift: 1 }",
        lambda x: np.log10(1 + 2 * x),
        uniform(0.5, 3),
        False,
    ),
    ("Log", "log_param { base: 2 }", np.log2, uniform(1.5, 5), False),
    ("AbsVal", "", np.abs, None, True),
    ("Sigmoid", "", _sigmoid, None, True),
    ("TanH", "", np.tanh, None, True),
    ("ELU", "", lambda x: np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1), None, True),
    (
        "ELU",
        "elu_param { alpha: 0.4 }",
        lambda x: np.where(x > 0, x, 0.4 * (np.exp(np.minimum(x, 0)) - 1)),
        None,
        True,
    ),
    ("BNLL", "", lambda x: np.logaddexp(0, x), None, True),
    ("BNLL", "", lambda x: np.logaddexp(0, x), uniform(-120, 120), True),
    ("Swish", "", lambda x: x * _sigmoid(x), None, True),
    # OpenCV ignores swish_param (beta is always 1).
    ("Swish", "swish_param { beta: 1.7 }", lambda x: x * _sigmoid(1.7 * x), None, False),
    ("Threshold", "", lambda x: (x > 0).astype(np.float64), None, False),
    (
        "Threshold",
        "threshold_param { threshold: 0.3 }",
        lambda x: (x > 0.3).astype(np.float64),
        None,
        False,
    ),
    ("Clip", "clip_param { min: -0.5 max: 0.7 }", lambda x: np.clip(x, -0.5, 0.7), None, False),
    ("Clip", "clip_param { min: 0.5 max: -0.5 }", lambda x: np.full_like(x, 0.5), None, False),
    # Fork types (docs/forks.md): the MobileNet ports' ReLU6 and the YOLOv4 ports' Mish.
    ("ReLU6", "", lambda x: np.clip(x, 0, 6), uniform(-4, 10), True),
    ("Mish", "", lambda x: x * np.tanh(np.logaddexp(0, x)), uniform(-8, 8), True),
]


@pytest.mark.parametrize(("layer_type", "params", "fn", "feeds", "opencv"), CASES)
def test_elementwise(layer_check, layer_type, params, fn, feeds, opencv):
    def expected(inputs, weights):
        return {"y": fn(fn(inputs["data"].astype(np.float64)))}

    layer_check(twice(layer_type, params), expected, feeds=feeds, opencv=opencv)


@pytest.mark.parametrize("shared", [False, True])
def test_prelu(layer_check, shared):
    params = "prelu_param { channel_shared: true }" if shared else ""
    prototxt = twice("PReLU", params)

    def expected(inputs, weights):
        y = inputs["data"].astype(np.float64)
        for layer in ("a", "b"):
            slope = weights[layer][0].reshape(-1, 1, 1)
            y = np.maximum(y, 0) + slope * np.minimum(y, 0)
        return {"y": y}

    # OpenCV cannot read the 0-axis slope blob Caffe writes for channel_shared (an assertion in
    # its blob decoder), so the shared form is checked against numpy alone.
    reports = layer_check(prototxt, expected, opencv=not shared)
    refs = {"stored", "float64"}
    if not shared and opencv_caffe_available() is None:
        refs.add("opencv")
    assert {c.reference for c in reports[0].comparisons} == refs


def test_prelu_on_2d_bottom(layer_check):
    prototxt = net(
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 6 } }\n'
        'layer { name: "a" type: "PReLU" bottom: "fc" top: "fc" }'
    )

    def expected(inputs, weights):
        w, b = weights["fc"]
        fc = inputs["data"].reshape(len(inputs["data"]), -1).astype(np.float64) @ w.T + b
        return {"fc": np.maximum(fc, 0) + weights["a"][0] * np.minimum(fc, 0)}

    layer_check(prototxt, expected)


def test_bad_settings_are_named(tmp_path):
    from caffe_compat.errors import NetDefinitionError
    from caffe_compat.ir.load import load_net

    for body in (
        'layer { name: "l" type: "Log" bottom: "data" top: "l" log_param { base: -2 } }',
        'layer { name: "l" type: "Clip" bottom: "data" top: "l" clip_param { min: 0 } }',
    ):
        (tmp_path / "n.prototxt").write_text(net(body))
        with pytest.raises(NetDefinitionError, match='layer "l"'):
            load_net(tmp_path / "n.prototxt")


MC_DROPOUT = net(
    'layer { name: "d" type: "Dropout" bottom: "data" top: "y" '
    "dropout_param { dropout_ratio: 0.3 sample_weights_test: true } }",
    c=20,
    h=25,
    w=40,
)


def _check_sampled(x: np.ndarray, runs: list[np.ndarray]) -> None:
    """caffe-segnet's DropoutLayer::Forward_cpu at TEST with sample_weights_test: each value is
    dropped (0) with probability ratio or kept times scale_ = 1 / (1 - ratio), a fresh mask on
    every run."""
    scale = np.float32(1.0 / (1.0 - 0.3))
    for y in runs:
        kept = y != 0
        np.testing.assert_allclose(y[kept], x[kept] * scale, rtol=1e-6)
        assert abs(1 - kept.mean() - 0.3) < 0.02  # 20000 draws: 0.02 is over 6 standard errors
    assert not np.array_equal(runs[0] != 0, runs[1] != 0)


def test_monte_carlo_dropout_samples_in_torch_and_onnx_and_switches_off(tmp_path):
    import onnxruntime as ort
    import torch

    from caffe_compat.converters.onnx.export import to_onnx
    from caffe_compat.converters.torch.activations import MonteCarloDropout
    from caffe_compat.converters.torch.model import CaffeNet
    from caffe_compat.ir.load import fork_notes, load_net
    from caffe_compat.shapes.activations import SAMPLING_SWITCH

    (tmp_path / "n.prototxt").write_text(MC_DROPOUT)
    loaded = load_net(tmp_path / "n.prototxt")
    assert any("Monte Carlo dropout" in note for note in fork_notes(loaded))
    x = np.random.default_rng(0).uniform(0.5, 1.5, (1, 20, 25, 40)).astype(np.float32)

    model = CaffeNet(loaded.graph).eval()
    with torch.no_grad():
        runs = [model(data=torch.from_numpy(x), outputs=["y"])["y"].numpy() for _ in range(2)]
    _check_sampled(x, runs)
    (module,) = [m for m in model.modules() if isinstance(m, MonteCarloDropout)]
    module.sample = False
    with torch.no_grad():
        np.testing.assert_array_equal(
            model(data=torch.from_numpy(x), outputs=["y"])["y"].numpy(), x
        )

    # convert's torch.export (dynamic batch: exported at 2, run at 1) keeps the sampling.
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(
        CaffeNet(loaded.graph), (torch.zeros(2, 20, 25, 40),), dynamic_shapes=(({0: batch},),)
    ).module()
    _check_sampled(x, [exported(torch.from_numpy(x)).numpy() for _ in range(2)])

    onnx_model = to_onnx(loaded.graph)
    inputs = [i.name for i in onnx_model.graph.input]
    assert inputs == ["data", SAMPLING_SWITCH]
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    _check_sampled(x, [session.run(["y"], {"data": x})[0] for _ in range(2)])  # default: sample
    off = session.run(["y"], {"data": x, SAMPLING_SWITCH: np.array(False)})[0]
    np.testing.assert_array_equal(off, x)


def test_synthesized_weights_of_a_monte_carlo_net_depend_on_the_seed_alone(tmp_path):
    """synth calibrates a BatchNorm after the dropout from what it sees: at the dropout's
    expected value, so one seed gives one file."""
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize

    body = (
        'layer { name: "d" type: "Dropout" bottom: "data" top: "d" '
        "dropout_param { dropout_ratio: 0.5 sample_weights_test: true } }\n"
        'layer { name: "c" type: "Convolution" bottom: "d" top: "c" '
        "convolution_param { num_output: 4 kernel_size: 3 } }\n"
        'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }\n'
    )
    (tmp_path / "n.prototxt").write_text(net(body))
    runs = [synthesize(load_net(tmp_path / "n.prototxt"), seed=3) for _ in range(2)]
    for layer, blobs in runs[0].items():
        for a, b in zip(blobs, runs[1][layer]):
            np.testing.assert_array_equal(a, b, err_msg=layer)
