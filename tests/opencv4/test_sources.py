"""verify names the exact bytes each side read: OpenCV gets a V2 copy of HDF5 weights and the
deploy form of a net with phase rules, our back ends the user's own files, --onnx its file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from caffe_compat.cli.main import main
from caffe_compat.converters.onnx.export import save_onnx, to_onnx
from caffe_compat.io import write_caffemodel, write_hdf5
from caffe_compat.io.identity import file_identity
from caffe_compat.io.writer import definitions_only
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify import verify
from caffe_compat.verify.opencv import opencv_caffe_available

if opencv_caffe_available() is not None:
    pytest.skip(f"OpenCV 4 cross-checks: {opencv_caffe_available()}", allow_module_level=True)

# A train/val-style net: the phase rule makes OpenCV read the TEST-phase deploy form we write.
NET = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" include { phase: TEST } }
"""


@pytest.fixture
def files(tmp_path):
    prototxt = tmp_path / "small.prototxt"
    prototxt.write_text(NET)
    loaded = load_net(prototxt)
    blobs = synthesize(loaded, seed=2, method="he")
    v2 = tmp_path / "small.caffemodel"
    write_caffemodel(v2, definitions_only(loaded.net.layer), blobs)
    h5 = tmp_path / "small.caffemodel.h5"
    write_hdf5(h5, blobs)
    return prototxt, v2, h5


def _id(path) -> tuple[int, str, str]:
    identity = file_identity(path)
    return identity.size, identity.sha256, identity.git_blob


def _key(record) -> tuple[int, str, str]:
    return record["size"], record["sha256"], record["git_blob"]


def test_each_side_reads_named_bytes(files, cv2_caffe):
    prototxt, _, h5 = files
    report = verify(prototxt, h5, batch=3, devices=("cpu",))
    assert report.passed
    ours = report.sources["torch"]
    assert _key(ours["prototxt"]) == _id(prototxt) and _key(ours["weights"]) == _id(h5)
    assert report.sources["onnxruntime"] == ours  # the ONNX model was built from the same files
    judge = report.sources["opencv"]
    assert judge["weights"]["note"] == "V2 copy of the hdf5 weights"
    assert judge["prototxt"]["note"] == "TEST-phase deploy form written for OpenCV"
    assert _key(judge["weights"]) != _id(h5) and _key(judge["prototxt"]) != _id(prototxt)
    text = report.render()
    assert f"read by opencv:       weights {judge['weights']['path']} sha256 " in text
    assert f"read by torch:        weights {h5} sha256 {_id(h5)[1][:12]}" in text


def test_same_files_and_onnx_and_stored_arrays_in_the_json(files, tmp_path, capsys, cv2_caffe):
    prototxt, v2, _ = files
    onnx_path = tmp_path / "small.onnx"
    save_onnx(to_onnx(load_net(prototxt, v2).graph), onnx_path)
    data = np.random.default_rng(0).uniform(-50, 50, (2, 3, 10, 10)).astype(np.float32)
    judge = cv2_caffe.dnn.readNetFromCaffe(str(prototxt), str(v2))
    judge.setInput(data)
    stored = tmp_path / "stored.npz"
    np.savez(stored, data=data, prob=judge.forward("prob"))
    args = ["verify", str(prototxt), str(v2), "--onnx", str(onnx_path), "--reference", str(stored)]
    code = main([*args, "--cpu-only", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"]
    sources = report["sources"]
    assert _key(sources["opencv"]["weights"]) == _id(v2)  # OpenCV read the user's caffemodel
    assert "note" not in sources["opencv"]["weights"]
    assert _key(sources["torch"]["weights"]) == _id(v2)
    assert sources["onnxruntime"] == {"onnx": {"path": str(onnx_path), **_fields(onnx_path)}}
    assert sources["stored"] == {"arrays": {"path": str(stored), **_fields(stored)}}


def _fields(path) -> dict:
    return dict(zip(("size", "sha256", "git_blob"), _id(path)))
