"""convert: outputs that load and agree, atomic writes, no overwrite without force."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _paths import TESTS

from caffe_compat.errors import CaffeCompatError, UnsupportedLayersError
from caffe_compat.io import write_caffemodel, write_hdf5
from caffe_compat.io.writer import definitions_only
from caffe_compat.ir.load import load_net
from caffe_compat.tools.convert import convert
from caffe_compat.tools.synth import synthesize


@pytest.fixture(scope="module")
def age(shared, tmp_path_factory):
    folder = tmp_path_factory.mktemp("age")
    loaded = load_net(shared / "deploy_age.prototxt")
    blobs = synthesize(loaded, seed=2)
    v1_layers = [layer for layer in loaded.net.layer if layer.type != "Input"]
    write_caffemodel(folder / "age_net.caffemodel", definitions_only(v1_layers), blobs, version=1)
    write_hdf5(folder / "age_net.h5", blobs)
    return shared / "deploy_age.prototxt", folder


def test_convert_writes_models_that_agree(age, tmp_path):
    prototxt, folder = age
    result = convert(prototxt, folder / "age_net.caffemodel", out_prefix=tmp_path / "age")
    assert result.report is not None and result.report.passed
    assert set(result.outputs) == {"onnx", "torch"}
    model = onnx.load(str(result.outputs["onnx"]))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert "git-blob=" in meta["source_weights"] and "caffemodel-v1" in meta["source_weights"]
    assert meta["parity_at_export"].startswith("pass")
    assert json.loads(meta["input_layout"]) == {"data": ["N", 3, 227, 227]}
    x = np.random.default_rng(0).standard_normal((3, 3, 227, 227)).astype(np.float32)
    session = ort.InferenceSession(str(result.outputs["onnx"]), providers=["CPUExecutionProvider"])
    (prob_onnx,) = session.run(["prob"], {"data": x})
    program = torch.export.load(str(result.outputs["torch"])).module()
    with torch.no_grad():
        prob_torch = program(torch.from_numpy(x)).numpy()
    assert prob_onnx.shape == (3, 8)
    np.testing.assert_allclose(prob_torch, prob_onnx, atol=1e-5)


def test_hdf5_weights_and_train_val_net(age, shared, tmp_path):
    _, folder = age
    result = convert(
        shared / "train_val_age_fold0.prototxt",
        folder / "age_net.h5",
        out_prefix=tmp_path / "tv",
        targets=["onnx"],
        input_shapes={"data": (1, 3, 227, 227)},
    )
    model = onnx.load(str(result.outputs["onnx"]))
    assert [o.name for o in model.graph.output] == ["fc8"]  # loss and accuracy dropped


def test_refuses_to_overwrite_and_force_overwrites(age, tmp_path):
    prototxt, folder = age
    target = tmp_path / "age.onnx"
    target.write_bytes(b"precious")
    with pytest.raises(CaffeCompatError, match="refusing to overwrite"):
        convert(prototxt, folder / "age_net.caffemodel", out_prefix=tmp_path / "age")
    assert target.read_bytes() == b"precious" and not (tmp_path / "age.pt2").exists()
    convert(
        prototxt,
        folder / "age_net.caffemodel",
        out_prefix=tmp_path / "age",
        force=True,
        targets=["onnx"],
        check=False,
    )
    assert target.read_bytes().startswith(b"\x08")  # an ONNX protobuf now


def test_failure_leaves_no_output(tmp_path):
    prototxt = tmp_path / "odd.prototxt"
    prototxt.write_text(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n'
        'layer { name: "w" type: "Weird" bottom: "x" top: "y" }\n'
    )
    weights = tmp_path / "odd.caffemodel"
    write_caffemodel(weights, definitions_only([]), {})
    with pytest.raises((UnsupportedLayersError, CaffeCompatError)):
        convert(prototxt, weights, out_prefix=tmp_path / "odd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.caffemodel", "odd.prototxt"]


def test_without_opencv_the_check_is_judged_by_the_float64_reference(age, tmp_path, monkeypatch):
    """Users on OpenCV 5 (no Caffe reader) still get an independent check: the float64 one."""
    import caffe_compat.verify.opencv as verify_module

    monkeypatch.setattr(verify_module, "opencv_caffe_available", lambda: "OpenCV 5 (simulated)")
    prototxt, folder = age
    result = convert(prototxt, folder / "age_net.caffemodel", out_prefix=tmp_path / "age")
    report = result.report
    assert report is not None and report.passed
    assert "torch-cpu" not in report.references  # no export-check stand-in
    assert "numpy float64" in report.references["float64"]
    assert {c.reference for c in report.comparisons} == {"float64"}
    assert {c.backend for c in report.comparisons} == {"torch-cpu", "onnxruntime-cpu"}
    assert report.references["opencv"].startswith("skipped: OpenCV 5")


def test_unexportable_net_falls_back_to_pickle_free_torch_weights(tmp_path, monkeypatch):
    """torch.export cannot trace DetectionOutput's data-dependent NMS: the fallback is the
    torch-weights file (no pickle), which load_torch rebuilds without unpickling anything."""
    import pickle

    import caffe_compat

    prototxt = TESTS / "converters" / "data" / "ssd_res10_300x300.prototxt"
    loaded = load_net(prototxt)
    weights = tmp_path / "ssd.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=1))
    result = convert(prototxt, weights, out_prefix=tmp_path / "ssd", targets=["torch"], check=False)
    assert result.outputs["torch"] == tmp_path / "ssd.safetensors"
    assert any("torch-weights" in note and "load_torch" in note for note in result.notes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssd.caffemodel", "ssd.safetensors"]

    def no_unpickling(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    model = caffe_compat.load_torch(result.outputs["torch"])
    x = torch.from_numpy(np.random.default_rng(0).uniform(-100, 100, (2, 3, 300, 300)))
    expected = load_net(prototxt, weights).graph
    from caffe_compat.converters.torch.model import CaffeNet

    with torch.no_grad():
        np.testing.assert_array_equal(
            model(x.float()).numpy(), CaffeNet(expected)(x.float()).numpy()
        )
    # The fallback never replaces an existing file without --force.
    with pytest.raises(CaffeCompatError, match="refusing to overwrite"):
        convert(prototxt, weights, out_prefix=tmp_path / "ssd", targets=["torch"], check=False)


def _small_net(tmp_path):
    from _harness import net

    text = net(
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        "convolution_param { num_output: 4 kernel_size: 3 } }\n"
        'layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }\n',
        c=3,
    )
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    loaded = load_net(prototxt)
    weights = tmp_path / "net.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=5))
    return prototxt, weights


def test_convert_plan_then_run(tmp_path):
    pytest.importorskip("onnx")
    from caffe_compat.errors import CaffeCompatError
    from caffe_compat.tools.convert import ConvertOptions, convert, plan_conversion

    prototxt, weights = _small_net(tmp_path)
    prefix = tmp_path / "out" / "small"
    prefix.parent.mkdir()
    plan = plan_conversion(weights, ConvertOptions(out_prefix=prefix, targets=("onnx",)))
    assert plan.paths == {"onnx": prefix.with_name("small.onnx")}
    assert plan.steps == ("read", "preflight", "build_onnx", "check", "write")
    result = convert(prototxt, weights, out_prefix=prefix, targets=["onnx"], progress=False)
    assert set(result.timings) == set(plan.steps) and result.outputs == plan.paths
    assert result.report is not None and result.report.passed
    with pytest.raises(CaffeCompatError, match="refusing to overwrite"):
        plan_conversion(weights, ConvertOptions(out_prefix=prefix, targets=("onnx",)))
    with pytest.raises(CaffeCompatError, match="unknown target"):
        plan_conversion(weights, ConvertOptions(targets=("caffe2",)))
