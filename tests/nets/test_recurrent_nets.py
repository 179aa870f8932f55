"""Recurrent nets end to end with synthesized weights: ``synth``, ``convert`` (ONNX and PyTorch)
and ``verify`` (every blob of PyTorch and ONNX Runtime against the float64 reference) on a small
CRNN (conv tower, ContinuationIndicator, BVLC LSTM, caffe_ocr's time-major Lstm) and a small LRCN
captioner (image features as the LSTM's static input, Embed words, cont markers, an RNN)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from caffe_compat.cli.main import main

DATA = Path(__file__).resolve().parent / "recurrent"  # not data/: those are OpenCV-judged zoo nets


@pytest.mark.slow
@pytest.mark.parametrize("name", ["crnn_small", "lrcn_small"])
def test_recurrent_net_converts_and_verifies(tmp_path, capsys, name):
    prototxt = DATA / f"{name}.prototxt"
    weights = tmp_path / f"{name}.caffemodel"
    assert main(["synth", str(prototxt), "-o", str(weights)]) == 0
    out = tmp_path / "out" / name
    assert main(["convert", str(prototxt), str(weights), "-o", str(out)]) == 0
    model = onnx.load(str(out) + ".onnx")
    ops = {n.op_type for n in model.graph.node}
    assert ("LSTM" in ops) == (name == "crnn_small")  # markers known when built: ONNX's LSTM
    assert ("Scan" in ops) == (name == "lrcn_small")  # cont is an input: a Scan over time
    capsys.readouterr()
    assert main(["verify", str(prototxt), str(weights)]) == 0
    report = capsys.readouterr().out
    assert report.rstrip().endswith("PASS")
    for blob in ("lstm1", "probs" if name == "lrcn_small" else "lstm2"):
        assert f"{blob} " in report
