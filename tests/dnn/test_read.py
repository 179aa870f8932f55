"""readNet/readNetFromCaffe: dispatch, the conversion cache, OpenCV 4's deviations, no torch, bad
input. Small nets, numpy judges (tests/_numpy_nets.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _dnn_files import OPENCV4, cv2
from _numpy_nets import conv2d, lrn_across

from caffe_compat import dnn
from caffe_compat.dnn import cache as dnn_cache
from caffe_compat.errors import CaffeCompatError

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }\n'
CONV = 'layer {{ name: "{name}" type: "Convolution" bottom: "data" top: "{name}" convolution_param {{ num_output: 6 kernel_size: 3 }} }}\n'
LRN = 'layer {{ name: "norm" type: "LRN" bottom: "conv" top: "norm" lrn_param {{ local_size: 5 alpha: 0.5 beta: 0.75 k: {k} }} }}\n'


def _blobs(names: list[str], seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        name: [
            rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
            rng.standard_normal(6).astype(np.float32),
        ]
        for name in names
    }


def _write(folder: Path, text: str, blobs: dict[str, list[np.ndarray]]) -> tuple[Path, Path]:
    from _dnn_files import write_net

    folder.mkdir(parents=True, exist_ok=True)
    prototxt = folder / "net.prototxt"
    prototxt.write_text(text)
    return prototxt, write_net(folder, prototxt, blobs)


def _lrn_net(folder: Path, k: float) -> tuple[Path, Path, dict]:
    blobs = _blobs(["conv"])
    prototxt, caffemodel = _write(folder, INPUT + CONV.format(name="conv") + LRN.format(k=k), blobs)
    return prototxt, caffemodel, blobs


def _lrn_judge(blobs: dict, x: np.ndarray, k: float) -> np.ndarray:
    return lrn_across(conv2d(x, *blobs["conv"]), 5, 0.5, 0.75, k)


X = np.random.default_rng(7).uniform(-3, 3, (1, 3, 12, 12)).astype(np.float32)


def _close(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape
    assert float(np.abs(ours - reference).max()) <= 1e-5 * max(float(np.abs(reference).max()), 1)


# --- OpenCV 4's deviations --------------------------------------------------------------------


def test_lrn_with_k_uses_the_conversion_and_matches_caffe(tmp_path):
    prototxt, caffemodel, blobs = _lrn_net(tmp_path, k=2.0)
    assert dnn.opencv_deviations(prototxt) == ['OpenCV ignores LRN k (k=2) (layer "norm")']
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    assert isinstance(net, dnn.ConvertedNet)  # on OpenCV 4 too: its reader ignores k
    net.setInput(X)
    judge = _lrn_judge(blobs, X, k=2.0)
    _close(net.forward(), judge)
    if OPENCV4:  # the deviation is real: OpenCV's own reader computes k = 1
        theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        theirs.setInput(X)
        assert float(np.abs(theirs.forward() - judge).max()) > 1e-2
        _close(theirs.forward(), _lrn_judge(blobs, X, k=1.0))


def test_exact_net_is_handed_to_opencv4(tmp_path):
    prototxt, caffemodel, blobs = _lrn_net(tmp_path, k=1.0)
    assert dnn.opencv_deviations(prototxt) == []
    net = dnn.readNetFromCaffe(prototxt, caffemodel)  # path objects are fine too
    assert isinstance(net, cv2.dnn.Net) == OPENCV4
    net.setInput(X)
    _close(net.forward(), _lrn_judge(blobs, X, k=1.0))


# --- readNet ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["prototxt-first", "caffemodel-first", "framework"])
def test_read_net_takes_the_pair_in_either_order(tmp_path, order):
    prototxt, caffemodel, blobs = _lrn_net(tmp_path, k=2.0)
    args = {
        "prototxt-first": (str(prototxt), str(caffemodel)),
        "caffemodel-first": (str(caffemodel), str(prototxt)),
        "framework": (str(caffemodel), str(prototxt), "Caffe"),
    }[order]
    net = dnn.readNet(*args)
    net.setInput(X)
    _close(net.forward(), _lrn_judge(blobs, X, k=2.0))


def test_read_net_passes_other_formats_to_opencv(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "relu.onnx"
    path.write_bytes(model.SerializeToString())
    net = dnn.readNet(str(path))
    assert isinstance(net, cv2.dnn.Net)
    net.setInput(X[:, :, :4, :4])
    np.testing.assert_array_equal(net.forward(), np.maximum(X[:, :, :4, :4], 0))
    assert dnn.DNN_BACKEND_OPENCV == cv2.dnn.DNN_BACKEND_OPENCV  # the rest is cv2.dnn's
    assert dnn.blobFromImage is cv2.dnn.blobFromImage


# --- names on a net with two outputs ---------------------------------------------------------


def test_two_outputs_names_and_default_forward(tmp_path):
    blobs = _blobs(["left", "right"], seed=1)
    text = INPUT + CONV.format(name="left") + CONV.format(name="right")
    text += 'layer { name: "act" type: "ReLU" bottom: "left" top: "left" }\n'
    prototxt, caffemodel = _write(tmp_path, text, blobs)
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(X)
    left, right = conv2d(X, *blobs["left"]), conv2d(X, *blobs["right"])
    assert net.getLayerNames() == ("left", "right", "act")
    assert net.getUnconnectedOutLayersNames() == ("right", "act")
    assert list(net.getUnconnectedOutLayers()) == [2, 3]
    _close(net.forward(), np.maximum(left, 0))  # OpenCV: the last layer's output
    got = net.forward(["act", "right", "left"])
    assert isinstance(got, tuple) and len(got) == 3
    _close(got[0], np.maximum(left, 0))
    _close(got[1], right)
    _close(got[2], left)  # layer "left": its own output, before the in-place ReLU
    _close(net.forward(outputName="left@left"), left)  # our value names work too
    with pytest.raises(CaffeCompatError, match='no layer or blob named "nope"'):
        net.forward("nope")
    x2 = X[:, ::-1].copy()  # a new input reaches both the lean and the every-value net
    net.setInput(x2, "data")
    _close(net.forward("left"), conv2d(x2, *blobs["left"]))
    _close(net.forward(), np.maximum(conv2d(x2, *blobs["left"]), 0))
    net.setInput(X)
    assert not net.empty()  # everything else is the cv2.dnn.Net's
    if OPENCV4:
        theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        theirs.setInput(X)
        assert net.getLayerNames() == theirs.getLayerNames()
        assert net.getUnconnectedOutLayersNames() == theirs.getUnconnectedOutLayersNames()
        _close(net.forward(), theirs.forward())
        for ours, their in zip(got, theirs.forward(["act", "right", "left"])):
            _close(ours, their)


# --- the cache ---------------------------------------------------------------------------------


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """Records every conversion the cache performs."""
    calls: list[Path] = []
    real = dnn_cache.convert

    def counting(prototxt, weights):
        calls.append(Path(weights))
        return real(prototxt, weights)

    monkeypatch.setattr(dnn_cache, "convert", counting)
    return calls


def _entry(home: Path, suffix: str) -> Path:
    (found,) = (home / "dnn").glob(f"*{suffix}")
    return found


def test_second_read_is_a_cache_hit(age_files, face, fresh_home, conversions):
    from _dnn_files import LH_MEAN

    prototxt, caffemodel, _ = age_files
    times = []
    nets = []
    for _ in range(2):
        start = time.perf_counter()
        nets.append(dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True))
        times.append(time.perf_counter() - start)
    print(f"\nage net: first read {times[0]:.2f} s (conversion), second {times[1]:.2f} s")
    assert len(conversions) == 1
    blob = cv2.dnn.blobFromImage(face, 1.0, (227, 227), LH_MEAN, swapRB=False)
    outs = []
    for net in nets:
        net.setInput(blob)
        outs.append(net.forward())
    np.testing.assert_array_equal(outs[0], outs[1])


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["onnx-byte", "onnx-truncated", "names", "hash"])
def test_damaged_cache_entry_is_rebuilt(tmp_path, fresh_home, conversions, damage):
    prototxt, caffemodel, blobs = _lrn_net(tmp_path, k=2.0)
    dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    onnx_file, json_file = _entry(fresh_home, ".onnx"), _entry(fresh_home, ".json")
    good_onnx, good_json = onnx_file.read_bytes(), json_file.read_bytes()
    if damage == "onnx-byte":
        _flip_middle_byte(onnx_file)
    elif damage == "onnx-truncated":
        onnx_file.write_bytes(good_onnx[:-10])
    else:
        record = json.loads(good_json)
        if damage == "names":
            record["body"]["meta"]["layers"] = ["renamed", "norm"]
        else:
            record["mac"] = "0" * 64
        json_file.write_text(json.dumps(record))
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    assert len(conversions) == 2  # converted again, not trusted
    assert net.getLayerNames() == ("conv", "norm")
    net.setInput(X)
    _close(net.forward(), _lrn_judge(blobs, X, k=2.0))
    assert onnx_file.read_bytes() == good_onnx and json.loads(json_file.read_bytes()) == (
        json.loads(good_json)
    )


def test_an_entry_copied_from_another_net_is_never_served(tmp_path, fresh_home, caplog):
    """Issue 21 #2: net B's .onnx and .json copied over net A's entry made readNetFromCaffe(A)
    return B; the entry's recorded sources are now compared with A's files on every load."""
    a_prototxt, a_weights, a_blobs = _lrn_net(tmp_path / "a", k=2.0)
    b_blobs = _blobs(["conv"], seed=5)
    b_prototxt, b_weights = _write(tmp_path / "b", a_prototxt.read_text(), b_blobs)
    dnn.readNetFromCaffe(str(a_prototxt), str(a_weights), convert=True)
    a_onnx, a_json = _entry(fresh_home, ".onnx"), _entry(fresh_home, ".json")
    a_onnx.rename(tmp_path / "a.onnx")
    a_json.rename(tmp_path / "a.json")
    dnn.readNetFromCaffe(str(b_prototxt), str(b_weights), convert=True)
    _entry(fresh_home, ".onnx").rename(a_onnx)  # B's entry under A's names
    _entry(fresh_home, ".json").rename(a_json)
    with caplog.at_level("WARNING", logger="caffe_compat.cache"):
        net = dnn.readNetFromCaffe(str(a_prototxt), str(a_weights), convert=True)
    net.setInput(X)
    _close(net.forward(), _lrn_judge(a_blobs, X, k=2.0))  # A's numbers, not B's
    assert float(np.abs(net.forward() - _lrn_judge(b_blobs, X, k=2.0)).max()) > 1e-2
    assert "was made from other files" in caplog.text and len(caplog.records) == 1


def _resign(home: Path, json_file: Path, change) -> None:
    """Edit the record's names and sign it with the cache's key (as only a key holder could)."""
    from caffe_compat.cache.entries import _sign
    from caffe_compat.cache.home import cache_key

    record = json.loads(json_file.read_text())
    change(record["body"]["meta"])
    record["mac"] = _sign(cache_key(home, create=False), record["body"])
    json_file.write_text(json.dumps(record))


@pytest.mark.parametrize("damage", ["nested", "list", "3gib-onnx", "inf-shape", "huge-shape"])
def test_a_hostile_entry_is_rebuilt_not_raised(tmp_path, fresh_home, conversions, caplog, damage):
    """Issue 21: readNetFromCaffe on a damaged entry raised RecursionError (200,000 nested
    brackets), MemoryError (a 3 GiB .onnx) or OverflowError (a shape of 1e400)."""
    prototxt, caffemodel, blobs = _lrn_net(tmp_path, k=2.0)
    dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    onnx_file, json_file = _entry(fresh_home, ".onnx"), _entry(fresh_home, ".json")
    if damage == "nested":
        json_file.write_text("[" * 200_000)
    elif damage == "list":
        json_file.write_text("[1, 2]")
    elif damage == "3gib-onnx":
        with open(onnx_file, "r+b") as handle:
            handle.truncate(3 << 30)  # sparse
    elif damage == "inf-shape":
        json_file.write_text(
            json_file.read_text().replace('"shapes": [', '"shapes": [["x", [1e400]], ', 1)
        )
    else:
        _resign(fresh_home, json_file, lambda meta: meta["shapes"][0][1].__setitem__(0, 10**400))
    with caplog.at_level("WARNING", logger="caffe_compat.cache"):
        net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    assert len(conversions) == 2 and len(caplog.records) == 1 and "rebuilding it" in caplog.text
    net.setInput(X)
    _close(net.forward(), _lrn_judge(blobs, X, k=2.0))
    assert onnx_file.stat().st_size < 1 << 20  # rebuilt


def test_changed_weights_get_a_new_entry(tmp_path, fresh_home, conversions):
    prototxt, caffemodel, _ = _lrn_net(tmp_path, k=2.0)
    dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    other = _blobs(["conv"], seed=9)
    _write(tmp_path, prototxt.read_text(), other)  # same paths, other weights
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    assert len(conversions) == 2 and len(list((fresh_home / "dnn").glob("*.onnx"))) == 2
    net.setInput(X)
    _close(net.forward(), _lrn_judge(other, X, k=2.0))


def test_cache_files_follow_the_umask(tmp_path, fresh_home):
    prototxt, caffemodel, _ = _lrn_net(tmp_path, k=2.0)
    previous = os.umask(0o027)
    try:
        dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    finally:
        os.umask(previous)
    for suffix in (".onnx", ".json"):
        assert _entry(fresh_home, suffix).stat().st_mode & 0o777 == 0o640
    assert not list((fresh_home / "dnn").glob(".*partial*"))


def test_unwritable_cache_still_reads(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CAFFE_COMPAT_HOME", str(blocker))
    prototxt, caffemodel, blobs = _lrn_net(tmp_path / "net", k=2.0)
    with caplog.at_level("WARNING", logger="caffe_compat.cache"):
        net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    assert len(caplog.records) == 1 and "could not write the cache entry" in caplog.text
    net.setInput(X)
    _close(net.forward(), _lrn_judge(blobs, X, k=2.0))


# --- without torch -----------------------------------------------------------------------------

NO_TORCH = r"""
import sys


class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")


sys.meta_path.insert(0, NoTorch())
import numpy as np
from caffe_compat import dnn

prototxt, caffemodel, x, expected = sys.argv[1:5]
x, expected = np.load(x), np.load(expected)
for convert in (None, True):
    net = dnn.readNetFromCaffe(prototxt, caffemodel, convert=convert)
    net.setInput(x)
    out = net.forward("norm")
    assert np.abs(out - expected).max() <= 1e-5 * np.abs(expected).max(), convert
    assert net.forward(["conv", "norm"])[1].shape == expected.shape
    print(type(net).__name__)
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch imported"
"""


def test_works_without_torch(tmp_path, fresh_home):
    prototxt, caffemodel, blobs = _lrn_net(tmp_path, k=2.0)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "expected.npy", _lrn_judge(blobs, X, k=2.0))
    args = [str(prototxt), str(caffemodel), str(tmp_path / "x.npy"), str(tmp_path / "expected.npy")]
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CAFFE_COMPAT_HOME": str(fresh_home)},
        cwd=tmp_path,  # not the checkout: the installed package must be the one imported
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ConvertedNet", "ConvertedNet"]


# --- bad input ---------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    for fragment in fragments:
        assert fragment in text, text


@pytest.mark.parametrize("convert", [None, True])
def test_missing_files(tmp_path, convert):
    prototxt, caffemodel, _ = _lrn_net(tmp_path, k=1.0)
    with pytest.raises(CaffeCompatError) as exc:
        dnn.readNetFromCaffe(str(tmp_path / "absent.prototxt"), str(caffemodel), convert=convert)
    _one_line(exc, "absent.prototxt", "no such file")
    with pytest.raises(CaffeCompatError) as exc:
        dnn.readNet(str(prototxt), str(tmp_path / "absent.caffemodel"))
    _one_line(exc, "absent.caffemodel", "no such file")


@pytest.mark.parametrize("convert", [None, True])
@pytest.mark.parametrize("k", [1.0, 2.0])
def test_corrupt_weights(tmp_path, convert, k):
    prototxt, caffemodel, _ = _lrn_net(tmp_path, k=k)
    caffemodel.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CaffeCompatError) as exc:
        dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=convert)
    _one_line(exc, "net.caffemodel")


@pytest.mark.parametrize("convert", [None, True])
def test_corrupt_prototxt(tmp_path, convert):
    prototxt, caffemodel, _ = _lrn_net(tmp_path, k=1.0)
    prototxt.write_text('layer { name: "conv" type: "Convolution" bottom: "data" top: ')
    with pytest.raises(CaffeCompatError) as exc:
        dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=convert)
    _one_line(exc, "net.prototxt")


def test_weights_of_another_net(tmp_path):
    prototxt, _, _ = _lrn_net(tmp_path / "a", k=2.0)
    other = _blobs(["conv"])
    other["conv"][0] = other["conv"][0][:, :, :2, :2]  # 2x2 kernels for a 3x3 layer
    _, caffemodel = _write(tmp_path / "b", prototxt.read_text(), other)
    with pytest.raises(CaffeCompatError) as exc:
        dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    _one_line(exc, "conv")


@pytest.mark.skipif(not OPENCV4, reason="OpenCV 4 only: no Caffe reader to fall back to on 5")
def test_deviation_net_falls_back_to_opencv_when_it_rejects_the_conversion(tmp_path, monkeypatch):
    """OpenCV 4's ONNX importer cannot parse every conversion (the res10 detector's in-graph
    DetectionOutput): the automatic path then warns, naming the deviation, and uses OpenCV's own
    reader, which the tutorial used before; convert=True raises instead."""
    from caffe_compat.dnn import read

    prototxt, caffemodel, blobs = _lrn_net(tmp_path, k=2.0)

    def rejecting(cv2_module, data, source):
        raise read.OpenCvRejectedError("OpenCV 4.x cannot load the ONNX conversion: simulated")

    monkeypatch.setattr(read, "_read_onnx", rejecting)
    with pytest.warns(RuntimeWarning, match=r"OpenCV ignores LRN k \(k=2\)"):
        net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    assert isinstance(net, cv2.dnn.Net)
    net.setInput(X)
    _close(net.forward(), _lrn_judge(blobs, X, k=1.0))  # OpenCV's numbers, as before
    with pytest.raises(read.OpenCvRejectedError, match="simulated"):
        dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
