"""convert: outputs that load and agree, atomic writes, no overwrite without force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _paths import TESTS
from _user_layers import SHIFT_LAYER
from onnx import numpy_helper

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


@pytest.mark.slow  # whole-net work; the fast tier must fit 6 minutes on 2 cores
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


# --- output names, opsets, float16 weights ------------------------------------------------------


def _cli(*args) -> tuple[int, str, str]:
    import contextlib
    import io

    from caffe_compat.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_output_named_like_a_file(small, tmp_path):
    """`-o age.onnx` writes age.onnx (and age.safetensors), not age.onnx.onnx."""
    prototxt, (weights, _) = small
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = _cli(
        "convert", prototxt, weights, "-o", out_dir / "age.onnx", "--to", "onnx,torch-weights"
    )
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["age.onnx", "age.safetensors"]
    assert f"wrote onnx  {out_dir / 'age.onnx'}" in out
    code, _, err = _cli(
        "convert", prototxt, weights, "-o", out_dir / "b.safetensors", "--to", "torch-weights"
    )
    assert code == 0 and (out_dir / "b.safetensors").is_file(), err


@pytest.mark.parametrize("opset", [12, 24, 0])
def test_opset_out_of_range_is_one_line(small, tmp_path, opset):
    prototxt, (weights, _) = small
    code, _, err = _cli("convert", prototxt, weights, "-o", tmp_path / "x", "--opset", opset)
    assert code == 2 and err.count("\n") == 1, err
    assert "--opset takes 13 to 23 (default 17)" in err
    assert not list(tmp_path.glob("x.*"))


def _opencv5_outputs(model_bytes: bytes, feeds, names, tmp_path):
    """OpenCV 5's outputs for the model: directly in the OpenCV 5 environment, else through
    CAFFE_COMPAT_OPENCV5_PYTHON; None when neither is there."""
    import cv2

    from caffe_compat.verify.opencv5 import opencv5_python, run_opencv5_onnx

    if not hasattr(cv2.dnn, "readNetFromCaffe"):  # OpenCV 5 in this environment
        net = cv2.dnn.readNetFromONNX(np.frombuffer(model_bytes, np.uint8))
        for name, array in feeds.items():
            net.setInput(array, name)
        return dict(zip(names, net.forward(list(names))))
    python = opencv5_python()
    if python is None:
        return None
    path = tmp_path / "model.onnx"
    path.write_bytes(model_bytes)
    return run_opencv5_onnx(python, path, feeds, names)[1]


def _every_opset(loaded, feeds, tmp_path, atol):
    """The net exported at every accepted opset, each run in ONNX Runtime and OpenCV 5 and
    judged by the float64 reference on the same weights."""
    from caffe_compat.converters.onnx import MAX_OPSET, MIN_OPSET
    from caffe_compat.converters.onnx.export import check_model, to_onnx
    from caffe_compat.reference import forward as reference_forward

    names = [loaded.graph.blob_of[v] for v in loaded.graph.outputs]
    judge = reference_forward(loaded, feeds, names)
    opencv_runs = 0
    for opset in range(MIN_OPSET, MAX_OPSET + 1):
        model = to_onnx(loaded.graph, opset=opset)
        check_model(model)
        assert model.opset_import[0].version == opset
        data = model.SerializeToString()
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        runs = {"onnxruntime": dict(zip(names, session.run(names, feeds)))}
        opencv = _opencv5_outputs(data, feeds, names, tmp_path)
        if opencv is not None:
            runs["opencv5"] = opencv
            opencv_runs += 1
        for runtime, outputs in runs.items():
            for name in names:
                got, want = outputs[name], judge[name]
                scale = max(float(np.abs(want).max()), 1.0)
                assert float(np.abs(got.reshape(want.shape) - want).max()) <= atol * scale, (
                    opset,
                    runtime,
                    name,
                )
    return opencv_runs


def test_every_opset_runs_in_onnxruntime_and_opencv5(small, tmp_path):
    from caffe_compat.verify.inputs import feeds_for

    prototxt, (weights, _) = small
    loaded = load_net(prototxt, weights)
    feeds = feeds_for(loaded.graph.inputs, 2, seed=4)
    _every_opset(loaded, feeds, tmp_path, atol=1e-5)
    code, _, err = _cli(
        "convert", prototxt, weights, "-o", tmp_path / "n", "--opset", 13, "--to", "onnx"
    )
    assert code == 0, err
    assert onnx.load(str(tmp_path / "n.onnx")).opset_import[0].version == 13


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "levi_hassner_age",
        "levi_hassner_gender",
        "bvlc_googlenet",
        "squeezenet_v1_1",
        "resnet_50",
        "res10_300x300_ssd",
        "bvlc_reference_caffenet",
        "bvlc_alexnet",
        "bvlc_reference_rcnn_ilsvrc13",
        "finetune_flickr_style",
        "open_nsfw",
        "vgg_ilsvrc_16",
    ],
)
def test_every_opset_on_the_zoo(name, tmp_path):
    """Every zoo net (calibrated weights) at every accepted opset, in ONNX Runtime and OpenCV 5."""
    import caffe_compat.zoo
    from caffe_compat.verify.inputs import feeds_for

    prototxt = Path(caffe_compat.zoo.__file__).parent / f"{name}.prototxt"
    loaded = load_net(prototxt)
    synthesize(loaded, seed=1, progress=False)
    feeds = feeds_for(loaded.graph.inputs, 1, seed=2)
    _every_opset(loaded, feeds, tmp_path, atol=1e-4)


def test_fp16_weights_halve_the_file(small, tmp_path):
    """--fp16: the ONNX file about halves (the small net's initializers are tiny, so a wider
    net is used), outputs stay within float16's precision of the float32 file's, and a weight
    beyond float16's range is refused in one line."""
    prototxt = tmp_path / "wide.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 64 } } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 512 } }\n'
        'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n'
    )
    loaded = load_net(prototxt)
    blobs = synthesize(loaded, seed=3, method="he", progress=False)
    weights = tmp_path / "wide.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
    for flag, prefix in (("--no-check", "full"), ("--fp16", "half")):
        code, out, err = _cli(
            "convert", prototxt, weights, "-o", tmp_path / prefix, "--to", "onnx", flag
        )
        assert code == 0, err
    assert "--fp16: 2 weights stored as float16" in out and "MiB" in out
    full, half = (tmp_path / "full.onnx").stat().st_size, (tmp_path / "half.onnx").stat().st_size
    assert 0.45 < half / full < 0.6, (half, full)
    x = np.random.default_rng(5).standard_normal((3, 64)).astype(np.float32)
    results = []
    for path in (tmp_path / "full.onnx", tmp_path / "half.onnx"):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        results.append(session.run(["prob"], {"data": x})[0])
    assert float(np.abs(results[0] - results[1]).max()) <= 1e-3
    assert results[1].dtype == np.float32

    blobs["fc"][0][0, 0] = 7e4
    write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
    code, _, err = _cli(
        "convert", prototxt, weights, "-o", tmp_path / "big", "--to", "onnx", "--fp16"
    )
    assert code == 2 and err.count("\n") == 1 and "outside float16's range" in err, err
    assert not (tmp_path / "big.onnx").exists()


def test_torch_targets_of_a_net_onnx_cannot_hold(tmp_path, monkeypatch):
    """A user's Python layer: ONNX refuses it, so --to torch/torch-weights convert without an
    ONNX model (said in a note), the check comparing PyTorch with the float64 reference."""
    (tmp_path / "shift_layers.py").write_text(SHIFT_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 '
        'dim: 3 dim: 3 } } }\nlayer { name: "s" type: "Python" bottom: "data" top: "s" '
        'python_param { module: "shift_layers" layer: "Shift" } }\n'
    )
    weights = tmp_path / "w.caffemodel"
    write_caffemodel(weights, load_net(prototxt).net, {"s": [np.array([1.0, -2.0], "f4")]})
    result = convert(prototxt, weights, out_prefix=tmp_path / "out", targets=["torch-weights"])
    assert result.outputs["torch-weights"].is_file()
    assert any("no ONNX model in the parity check" in note for note in result.notes)
    assert result.report is not None and result.report.passed
    assert "float64" in result.report.references
    with pytest.raises(UnsupportedLayersError, match=r"shift_layers\.Shift"):
        convert(prototxt, weights, out_prefix=tmp_path / "out2", targets=["onnx"])


def test_onnx_bytes_parse_to_the_same_model(shared):
    """convert writes ``to_onnx_bytes``: initializers serialised one by one, each as its own
    ``graph`` field, parse (protobuf merges them) to exactly ``to_onnx``'s model."""
    from caffe_compat.converters.onnx.export import to_onnx, to_onnx_bytes

    loaded = load_net(shared / "deploy_age.prototxt")
    synthesize(loaded, method="he", progress=False)
    whole = to_onnx(loaded.graph, metadata={"source": "x"})
    streamed = to_onnx_bytes(loaded.graph, metadata={"source": "x"})
    assert onnx.load_from_string(streamed) == whole
    assert len(whole.graph.initializer) == 12
    onnx.checker.check_model(streamed, full_check=True)


def test_onnx_written_piece_by_piece_parses_to_the_same_model(shared, tmp_path):
    """verify's ONNX file (``write_onnx_streamed``: each initializer's raw bytes written after
    the rest of it, never serialised whole) parses to ``to_onnx``'s model with the values
    verify fetches as extra outputs."""
    from caffe_compat.converters.onnx.export import to_onnx, write_onnx_streamed

    loaded = load_net(shared / "deploy_age.prototxt")
    synthesize(loaded, method="he", progress=False)
    extra = [v for v in loaded.graph.values if v not in loaded.graph.inputs]
    whole = to_onnx(loaded.graph, extra_outputs=extra)
    path = tmp_path / "m.onnx"
    write_onnx_streamed(loaded.graph, path, extra_outputs=extra, check=False)
    parsed = onnx.load(str(path))
    assert parsed == whole
    assert sum(len(t.raw_data) for t in parsed.graph.initializer) > 1_000_000
    split = tmp_path / "split" / "m.onnx"  # the weights as external data beside it
    split.parent.mkdir()
    write_onnx_streamed(loaded.graph, split, extra_outputs=extra, check=False, external="w.bin")
    assert split.stat().st_size < 100_000 < (split.parent / "w.bin").stat().st_size
    read = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(split)).graph.initializer}
    expected = {t.name: numpy_helper.to_array(t) for t in whole.graph.initializer}
    assert read.keys() == expected.keys()
    assert all(np.array_equal(read[k], expected[k]) for k in expected)


def test_a_check_over_the_budget_is_skipped_and_said(tmp_path, monkeypatch):
    """The quick check holds the built model's bytes beside what verify holds: when its plan
    is refused, the files are written and the output and the ONNX metadata say so."""
    from caffe_compat.errors import MemoryBudgetError
    from caffe_compat.tools import convert as convert_module

    def refused(*_args, **_kwargs):
        raise MemoryBudgetError("the verification at batch 1 needs 3 GiB, over the budget")

    monkeypatch.setattr(convert_module, "verify_loaded", refused)
    prototxt, weights = _small_net(tmp_path)
    result = convert(prototxt, weights, out_prefix=tmp_path / "s", targets=["onnx"], progress=False)
    assert result.report is None and result.outputs["onnx"].exists()
    assert any(n.startswith("parity check skipped: the verification") for n in result.notes)
    model = onnx.load(str(result.outputs["onnx"]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["parity_at_export"] == "skipped: over the memory budget"
