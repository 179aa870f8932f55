"""demo: the README's main job, on a machine with no files of the user's."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from caffe_compat.cli.main import main
from caffe_compat.io import read_caffemodel


@pytest.mark.slow
def test_demo_converts_and_verifies_both_nets(judge, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--batch", "6"]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHESIZED" in printed
    assert printed.count("reference float64: caffe_compat.reference") == 2
    if judge == "opencv":
        assert printed.count("readNetFromCaffe, same files") == 2
    assert printed.count("PASS:") == 2 and "FAIL" not in printed
    for name, classes in (("levi_hassner_age", 8), ("levi_hassner_gender", 2)):
        weights = read_caffemodel(out / f"{name}.SYNTHETIC.caffemodel")
        assert weights.blobs["fc6"][0].shape == (512, 18816)
        session = ort.InferenceSession(str(out / f"{name}.onnx"))
        x = np.random.default_rng(0).uniform(-120, 120, (3, 3, 227, 227)).astype(np.float32)
        (prob,) = session.run(None, {session.get_inputs()[0].name: x})
        assert prob.shape == (3, classes)
        np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)


def test_demo_without_opencv_4_is_judged_by_the_float64_reference(tmp_path, capsys, monkeypatch):
    """OpenCV 5 users have no Caffe reader: the demo compares with the float64 reference."""
    import caffe_compat.verify.opencv as verify_module

    monkeypatch.setattr(verify_module, "opencv_caffe_available", lambda: "OpenCV 5 (simulated)")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--batch", "4"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reference float64: caffe_compat.reference") == 2
    assert "export check" not in printed
    assert printed.count("PASS") == 2


def test_demo_files_go_to_a_temporary_folder_unless_out_is_given(tmp_path, capsys, monkeypatch):
    """A clone must not fill up with 270 MB: by default nothing stays behind."""
    import caffe_compat.cli.demo as demo

    used = []

    def fake_run_one(name, out, seed, batch):
        (out / f"{name}.onnx").write_bytes(b"model")
        used.append(out)
        return True

    monkeypatch.setattr(demo, "_run_one", fake_run_one)
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    assert "temporary folder, now removed; --out DIR keeps them" in capsys.readouterr().out
    assert len(set(used)) == 1 and not used[0].exists()
    assert list(tmp_path.iterdir()) == []
    assert main(["demo", "--out", "kept"]) == 0
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [
        f"{n}.onnx" for n in demo.MODELS
    ]
