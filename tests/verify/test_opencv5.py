"""Our ONNX export of the Levi-Hassner nets must load and agree in OpenCV 5, which has no Caffe
importer: the migration path for every OpenCV tutorial that used readNetFromCaffe."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from caffe_compat.converters.onnx.export import save_onnx, to_onnx
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify.inputs import feeds_for
from caffe_compat.verify.opencv5 import ENV_VAR, opencv5_python, run_opencv5_onnx


@pytest.fixture(scope="module")
def cv5() -> str:
    python = opencv5_python()
    if python is None:
        pytest.skip(f"no OpenCV 5 environment ({ENV_VAR} unset; .ci/run creates one)")
    return python


@pytest.mark.parametrize("deploy", ["deploy_age.prototxt", "deploy_gender.prototxt"])
@pytest.mark.parametrize("batch", [1, 3])
def test_levi_hassner_onnx_runs_in_opencv5(shared, cv5, tmp_path, deploy, batch):
    loaded = load_net(shared / deploy)
    synthesize(loaded, seed=5)
    model = to_onnx(loaded.graph, extra_outputs=["fc8"])
    path = tmp_path / "net.onnx"
    save_onnx(model, path)
    feeds = feeds_for(loaded.graph.inputs, batch, seed=11)
    version, got = run_opencv5_onnx(cv5, path, feeds, ["prob", "fc8"])
    assert version.startswith("5."), version
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = dict(zip(["prob", "fc8"], session.run(["prob", "fc8"], feeds)))
    assert got["prob"].shape == want["prob"].shape
    assert np.abs(got["prob"] - want["prob"]).max() <= 1e-4
    fc8_scale = np.abs(want["fc8"]).max()
    assert np.abs(got["fc8"] - want["fc8"]).max() <= 1e-4 * fc8_scale
    np.testing.assert_array_equal(got["prob"].argmax(1), want["prob"].argmax(1))
