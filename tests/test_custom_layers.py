"""User extension: a fork's layer registered on all three back ends (as docs/custom_layers.md
shows), a built-in overridden and restored, and one error naming every unsupported layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caffe_compat import registry
from caffe_compat.converters.onnx._base import OnnxOut
from caffe_compat.converters.onnx.export import to_onnx
from caffe_compat.converters.torch.model import CaffeNet
from caffe_compat.errors import UnsupportedLayersError
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify import Tolerance, verify_loaded
from caffe_compat.verify.backends import run_onnxruntime

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 5 dim: 7 dim: 9 } } }\n'
MISH_NET = (
    INPUT
    + 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }\n'
    + 'layer { name: "mish1" type: "MyMish" bottom: "conv" top: "conv" }\n'
    + 'layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 6 } }\n'
    + 'layer { name: "mish2" type: "MyMish" bottom: "fc" top: "out" }\n'
)
MISH_BACKENDS = ("shape", "torch", "onnx")


def mish_shape(node, inputs):
    return registry.LayerShapes(outputs=[inputs[0]], params=[])


def mish_torch(node, ctx):
    return torch.nn.Mish()


def mish_onnx(node, ctx):
    (x,), (y,) = ctx.inputs, ctx.outputs
    soft, tanh = ctx.name("softplus"), ctx.name("tanh")
    return OnnxOut(
        [
            ctx.op("Softplus", [x], [soft], "softplus"),
            ctx.op("Tanh", [soft], [tanh], "tanh"),
            ctx.op("Mul", [x, tanh], [y]),
        ]
    )


@pytest.fixture
def mish():
    """MyMish (a fork's Mish under another name) registered on every back end for the test, removed afterwards."""
    functions = {"shape": mish_shape, "torch": mish_torch, "onnx": mish_onnx}
    for backend, fn in functions.items():
        registry.register("MyMish", backend)(fn)
    yield
    for backend in MISH_BACKENDS:
        registry.unregister("MyMish", backend)


def numpy_mish(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x * np.tanh(np.log1p(np.exp(x)))


def numpy_net(x: np.ndarray, weights: dict) -> dict[str, np.ndarray]:
    """Caffe's forward pass for MISH_NET, written out in numpy (valid 3x3 convolution)."""
    w, b = (a.astype(np.float64) for a in weights["conv"])
    n, _, h, wd = x.shape
    conv = np.zeros((n, w.shape[0], h - 2, wd - 2))
    for i in range(3):
        for j in range(3):
            patch = x[:, :, i : i + h - 2, j : j + wd - 2].astype(np.float64)
            conv += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    conv += b[None, :, None, None]
    hidden = numpy_mish(conv)
    fw, fb = (a.astype(np.float64) for a in weights["fc"])
    fc = hidden.reshape(n, -1) @ fw.T + fb
    return {"conv": hidden, "fc": fc, "out": numpy_mish(fc)}


def test_custom_layer_converts_on_torch_and_onnx_and_matches_numpy(tmp_path, mish):
    path = tmp_path / "mish.prototxt"
    path.write_text(MISH_NET)
    weights = synthesize(load_net(path), seed=2, method="he")
    model_path = tmp_path / "mish.caffemodel"
    write_caffemodel(model_path, definitions_only(load_net(path).net.layer), weights)
    loaded = load_net(path, model_path)
    x = np.random.default_rng(5).normal(0, 2, (3, 5, 7, 9)).astype(np.float32)
    report = verify_loaded(
        loaded,
        weights_path=str(model_path),
        feeds={"data": x},
        reference=numpy_net(x, weights),
        tolerance=Tolerance(rtol=1e-5, atol=1e-5),
        devices=("cpu",),
    )
    assert report.passed, report.render(all_rows=False)
    stored = {(c.backend, c.blob) for c in report.comparisons if c.reference == "stored"}
    for backend in ("torch-cpu", "onnxruntime-cpu"):
        assert {(backend, b) for b in ("conv", "fc", "out")} <= stored
    ops = [n.op_type for n in to_onnx(loaded.graph).graph.node]
    assert ops.count("Softplus") == 2 and "Mish" not in ops  # opset 17 has no Mish


def test_unregister_restores_the_previous_state(mish):
    for backend in MISH_BACKENDS:
        registry.unregister("MyMish", backend)
        assert registry.lookup("MyMish", backend) is None
    for backend, fn in {"shape": mish_shape, "torch": mish_torch, "onnx": mish_onnx}.items():
        registry.register("MyMish", backend)(fn)  # the fixture unregisters them again


RELU_NET = INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'


def test_user_registration_overrides_a_builtin_until_unregistered(tmp_path):
    path = tmp_path / "relu.prototxt"
    path.write_text(RELU_NET)
    graph = load_net(path).graph
    x = np.linspace(-10, 10, 2 * 5 * 7 * 9, dtype=np.float32).reshape(2, 5, 7, 9)
    builtins = {b: registry.lookup("ReLU", b) for b in ("torch", "onnx")}

    def relu6_onnx(node, ctx):
        return OnnxOut(
            [ctx.op("Clip", [ctx.inputs[0], ctx.name("lo"), ctx.name("hi")], ctx.outputs)],
            [ctx.tensor("lo", 0.0), ctx.tensor("hi", 6.0)],
        )

    def run() -> tuple[np.ndarray, np.ndarray]:
        ours = CaffeNet(graph)(torch.from_numpy(x)).numpy()
        onnx_out = run_onnxruntime(to_onnx(graph).SerializeToString(), {"data": x})["r"]
        return ours, onnx_out

    registry.register("ReLU", "torch")(lambda node, ctx: torch.nn.ReLU6())
    registry.register("ReLU", "onnx")(relu6_onnx)
    try:
        for out in run():
            np.testing.assert_array_equal(out, np.clip(x, 0, 6))
    finally:
        registry.unregister("ReLU", "torch")
        registry.unregister("ReLU", "onnx")
    assert {b: registry.lookup("ReLU", b) for b in ("torch", "onnx")} == builtins
    for out in run():
        np.testing.assert_array_equal(out, np.maximum(x, 0))


def test_every_unsupported_layer_is_named_in_one_error_before_any_work(tmp_path):
    # "bad_pool" has an invalid setting that its shape rule would reject, and the weights file
    # does not exist: the error about the unknown types must come first, i.e. before shape
    # inference and before any weights are read.
    text = (
        INPUT
        + 'layer { name: "bad_pool" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAX kernel_size: 50 } }\n'
        + 'layer { name: "m1" type: "MyMish" bottom: "p" top: "m1" }\n'
        + 'layer { name: "up1" type: "MyUpsample" bottom: "m1" top: "up1" }\n'
        + 'layer { name: "m2" type: "MyMish" bottom: "up1" top: "m2" }\n'
        + 'layer { name: "ok" type: "ReLU" bottom: "m2" top: "m2" }\n'
        + 'layer { name: "up2" type: "MyUpsample" bottom: "m2" top: "up2" }\n'
        + 'layer { name: "m3" type: "MyMish" bottom: "up2" top: "m3" }\n'
    )
    path = tmp_path / "fork.prototxt"
    path.write_text(text)
    with pytest.raises(UnsupportedLayersError) as caught:
        load_net(path, tmp_path / "missing.caffemodel")
    error = caught.value
    assert sorted((m.layer_type, m.name) for m in error.missing) == [
        ("MyMish", "m1"),
        ("MyMish", "m2"),
        ("MyMish", "m3"),
        ("MyUpsample", "up1"),
        ("MyUpsample", "up2"),
    ]
    message = str(error)
    assert "MyMish [shape]: m1, m2, m3" in message and "MyUpsample [shape]: up1, up2" in message
    assert "5 unsupported layer(s)" in message and "\n" not in message
    assert str(path) in message
