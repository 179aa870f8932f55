"""caffe-compat inspect: nets alone, nets with V1/V2/HDF5 weights, weights alone, JSON output, and
mismatches reported with exit code 2. Includes an HDF5 round trip of a caffemodel."""

from __future__ import annotations

import json

import numpy as np
import pytest

from caffe_compat.cli.main import main
from caffe_compat.io import read_weights, write_caffemodel, write_hdf5
from caffe_compat.io.writer import definitions_only
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize

AGE_PARAMS = {
    "conv1": [[96, 3, 7, 7], [96]],
    "conv2": [[256, 96, 5, 5], [256]],
    "conv3": [[384, 256, 3, 3], [384]],
    "fc6": [[512, 18816], [512]],
    "fc7": [[512, 512], [512]],
    "fc8": [[8, 512], [8]],
}


@pytest.fixture(scope="module")
def age_files(shared, tmp_path_factory):
    """deploy_age weights as V1 and V2 caffemodels, and as HDF5 converted from the V2 file."""
    folder = tmp_path_factory.mktemp("age")
    loaded = load_net(shared / "deploy_age.prototxt")
    blobs = synthesize(loaded, seed=1, method="he")
    v2 = folder / "age_v2.caffemodel"
    write_caffemodel(v2, definitions_only(loaded.net.layer), blobs)
    v1_layers = [layer for layer in loaded.net.layer if layer.type != "Input"]
    write_caffemodel(folder / "age_v1.caffemodel", definitions_only(v1_layers), blobs, version=1)
    write_hdf5(folder / "age.h5", read_weights(v2).blobs)  # the round trip under test
    return shared / "deploy_age.prototxt", folder, blobs


def inspect_json(capsys, *args) -> tuple[int, dict]:
    code = main(["inspect", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    assert not err
    return code, json.loads(out)


def params(report) -> dict[str, list[list[int]]]:
    return {layer["name"]: layer["params"] for layer in report["layers"] if layer["params"]}


@pytest.mark.parametrize("weights", ["age_v2.caffemodel", "age_v1.caffemodel", "age.h5"])
def test_net_with_weights_agrees(age_files, capsys, weights):
    prototxt, folder, _ = age_files
    code, report = inspect_json(capsys, prototxt, folder / weights)
    assert code == 0 and report["issues"] == []
    assert report["prototxt"]["format"] == "V1"
    assert report["outputs"] == {"prob": [1, 8]}  # shapes are arrays of ints in JSON
    assert params(report) == AGE_PARAMS
    expected_format = {"age_v2.caffemodel": "caffemodel-v2", "age_v1.caffemodel": "caffemodel-v1"}
    assert report["weights"]["format"] == expected_format.get(weights, "hdf5")
    assert report["weights"]["param_count"] == report["param_count"] == 11_415_048
    assert report["weights"]["layers_with_blobs"] == 6


def test_hdf5_round_trip_holds_the_same_weights(age_files, capsys):
    _, folder, blobs = age_files
    from_h5 = read_weights(folder / "age.h5")
    assert from_h5.format == "hdf5"
    for name, arrays in blobs.items():
        assert all(np.array_equal(a, b) for a, b in zip(from_h5.blobs[name], arrays, strict=True))
    _, binary = inspect_json(capsys, folder / "age_v2.caffemodel")
    _, hdf5 = inspect_json(capsys, folder / "age.h5")
    assert hdf5["weights"]["param_count"] == binary["weights"]["param_count"]
    shapes = {layer["name"]: layer["params"] for layer in hdf5["layers"]}
    assert shapes == AGE_PARAMS == params(binary)


def test_weights_alone_text_report(age_files, capsys):
    _, folder, _ = age_files
    assert main(["inspect", str(folder / "age_v1.caffemodel")]) == 0
    out = capsys.readouterr().out
    assert "caffemodel-v1, 11,415,048 values in 6 layers" in out
    assert "fc6" in out and "512x18816" in out and "InnerProduct" in out


def test_net_alone_text_report(shared, capsys):
    assert main(["inspect", str(shared / "deploy_gender.prototxt")]) == 0
    out = capsys.readouterr().out
    assert "format     V1 prototxt, phase TEST" in out
    assert "outputs    prob 10x2" in out
    assert "problems   none" in out


def test_train_val_in_both_phases(shared, capsys):
    path = shared / "train_val_age_fold0.prototxt"
    _, test = inspect_json(capsys, path)
    _, train = inspect_json(capsys, path, "--phase", "TRAIN")
    assert {d["name"] for d in test["dropped"]} == {"data", "accuracy", "loss"}
    assert {d["name"] for d in train["dropped"]} == {"data", "loss"}
    assert test["inputs"] == train["inputs"] == {"data": [50, 3, 227, 227]}


def test_mismatched_weights_exit_2_with_every_problem(shared, tmp_path, capsys):
    loaded = load_net(shared / "deploy_gender.prototxt")  # fc8 is 2x512; the age net wants 8x512
    path = tmp_path / "gender.caffemodel"
    write_caffemodel(path, definitions_only(loaded.net.layer), synthesize(loaded, method="he"))
    code, report = inspect_json(capsys, shared / "deploy_age.prototxt", path)
    assert code == 2
    problems = {(i["layer"], i["kind"]) for i in report["issues"]}
    assert {layer for layer, _ in problems} == {"fc8"}


def test_inspect_describes_a_mean_file(shared, capsys):
    """inspect mean.binaryproto: shape and per-channel means (the Levi-Hassner mean: the BGR
    values OpenCV's age-gender sample passes to blobFromImage), as text and JSON."""
    import json

    from caffe_compat.cli.main import main

    mean = shared / "mean.binaryproto"
    assert main(["inspect", str(mean)]) == 0
    out = capsys.readouterr().out
    assert "shape      [1, 3, 256, 256]" in out
    assert "78.4263, 87.7689, 114.8958" in out and "blobFromImage" in out
    assert main(["inspect", str(mean), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["blobproto"]
    assert report["shape"] == [1, 3, 256, 256]
    expected = (78.4263377603, 87.7689143744, 114.895847746)
    assert report["channel_means"] == pytest.approx(expected, abs=1e-4)
