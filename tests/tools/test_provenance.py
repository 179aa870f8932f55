"""Outputs of one convert record one source, and reading a record unpickles nothing."""

from __future__ import annotations

import pickle

import pytest
import torch

from caffe_compat.errors import CaffeCompatError
from caffe_compat.tools.convert import convert
from caffe_compat.tools.provenance import check_same_source, read_provenance


def test_outputs_of_one_convert_record_the_same_source(small, tmp_path):
    prototxt, (weights, other) = small
    result = convert(
        prototxt,
        weights,
        out_prefix=tmp_path / "m",
        targets=["onnx", "torch", "torch-weights"],
        check=False,
    )
    record = check_same_source(result.outputs.values())
    assert set(record) == {"converter", "source_prototxt", "source_weights", "conversion"}
    assert "w0.caffemodel" in record["source_weights"] and "git-blob=" in record["source_weights"]
    # Another run with other weights, replacing only the ONNX file: the pair is told apart.
    convert(prototxt, other, out_prefix=tmp_path / "m", targets=["onnx"], check=False, force=True)
    with pytest.raises(CaffeCompatError) as info:
        check_same_source([tmp_path / "m.pt2", tmp_path / "m.onnx"])
    message = str(info.value)
    assert "not from the same conversion" in message and "source_weights" in message


def test_reading_a_pt2_record_unpickles_nothing(small, tmp_path, monkeypatch):
    prototxt, (weights, _) = small
    result = convert(prototxt, weights, out_prefix=tmp_path / "m", targets=["torch"], check=False)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    assert read_provenance(result.outputs["torch"])["conversion"]
