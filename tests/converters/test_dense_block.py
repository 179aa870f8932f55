"""DenseBlock (senlinuc/caffe_ocr): PyTorch and ONNX Runtime against the float64 reference and a
numpy transcription of DenseBlock_layer.cpp's inference (BN with the stored statistics, ReLU,
[1x1 conv, BN, ReLU,] the true 3x3 convolution, concat), with the fork's blob order."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net

from caffe_compat.io.dialects import settle
from caffe_compat.io.wire import write_key, write_varint
from caffe_compat.proto import caffe_pb2

EPS = 1e-5


def block(t: int, g: int, extra: str = "") -> str:
    return net(
        'layer { name: "db" type: "DenseBlock" bottom: "data" top: "db" denseblock_param { '
        f'numTransition: {t} growthRate: {g} Filter_Filler {{ type: "msra" }} {extra} }} }}'
    )


def bn(x, scaler, bias, mean, var, factor):
    f = 1.0 if factor == 0 else 1.0 / factor
    c = (1, -1, 1, 1)
    m, v = mean.reshape(c) * f, var.reshape(c) * f
    return scaler.reshape(c) * (x - m) / np.sqrt(v + EPS) + bias.reshape(c)


def true_conv3(x, w):
    """y[h, w] = sum w[kh, kw] * x[h + 1 - kh, w + 1 - kw], zero outside (the fork's CPU loop)."""
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    h, wd = x.shape[2:]
    y = np.zeros((x.shape[0], w.shape[0], h, wd))
    for kh in range(3):
        for kw in range(3):
            window = xp[:, :, 2 - kh : 2 - kh + h, 2 - kw : 2 - kw + wd]
            y += np.einsum("nchw,oc->nohw", window, w[:, :, kh, kw])
    return y


def dense_block(x, blobs, t, bc):
    blobs = [np.asarray(b, np.float64) for b in blobs]
    factor = float(blobs[-1].reshape(-1)[0])
    merged = x.astype(np.float64)
    for i in range(t):
        y = np.maximum(bn(merged, *(blobs[k * t + i] for k in (1, 2, 3, 4)), factor), 0)
        if bc:
            y = np.einsum("nchw,oc->nohw", y, blobs[5 * t + i][:, :, 0, 0])
            y = np.maximum(bn(y, *(blobs[k * t + i] for k in (6, 7, 8, 9)), factor), 0)
        merged = np.concatenate([merged, true_conv3(y, blobs[i])], axis=1)
    return merged


@pytest.mark.parametrize(("t", "g", "bc"), [(3, 2, False), (2, 3, True)])
def test_dense_block(layer_check, t, g, bc):
    extra = "use_BC: true" if bc else ""
    reports = layer_check(
        block(t, g, extra),
        lambda i, w: {"db": dense_block(i["data"], w["db"], t, bc)},
        opencv=False,
    )
    assert reports[0].comparisons


def test_dense_block_with_a_zero_factor_uses_the_blobs_as_they_are(tmp_path, layer_check):
    """The GPU path never writes the factor: 0 there means the statistics are used as stored."""
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize

    (tmp_path / "db.prototxt").write_text(block(2, 2))
    weights = synthesize(load_net(tmp_path / "db.prototxt"))
    assert len(weights["db"]) == 5 * 2 + 1
    weights["db"][-1] = np.zeros(1, np.float32)
    layer_check(
        block(2, 2),
        lambda i, w: {"db": dense_block(i["data"], w["db"], 2, False)},
        blobs=weights,
        opencv=False,
    )


def test_a_binary_definition_at_caffe_ocrs_field_number_is_moved():
    """caffe_ocr writes denseblock_param at 147, which this schema gives swish_param."""
    inner = caffe_pb2.DenseBlockParameter(numTransition=3, growthRate=5, use_BC=True)
    payload = inner.SerializeToString()
    head = caffe_pb2.LayerParameter(name="db", type="DenseBlock").SerializeToString()
    data = head + write_key(147, 2) + write_varint(len(payload)) + payload
    netp = caffe_pb2.NetParameter()
    netp.layer.add().MergeFromString(data)
    assert netp.layer[0].HasField("swish_param")
    notes = settle(netp)
    layer = netp.layer[0]
    assert not layer.HasField("swish_param")
    p = layer.denseblock_param
    assert (p.numTransition, p.growthRate, p.use_BC) == (3, 5, True)
    assert notes and "147" in notes[0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("numTransition: 1000000000", "at most 4096"),
        ("numTransition: -1", "must be >= 0"),
        ("numTransition: 2 growthRate: 0", "growthRate is 0"),
    ],
)
def test_bad_settings_are_one_line(tmp_path, settings, message):
    from caffe_compat.errors import NetDefinitionError
    from caffe_compat.ir.load import load_net

    text = net(
        'layer { name: "db" type: "DenseBlock" bottom: "data" top: "db" '
        f"denseblock_param {{ {settings} }} }}"
    )
    (tmp_path / "db.prototxt").write_text(text)
    with pytest.raises(NetDefinitionError, match=message):
        load_net(tmp_path / "db.prototxt")


def test_train_phase_is_refused(tmp_path):
    from caffe_compat.errors import CaffeCompatError
    from caffe_compat.ir.load import load_net

    (tmp_path / "db.prototxt").write_text(block(1, 2))
    with pytest.raises(CaffeCompatError, match="TRAIN phase"):
        load_net(tmp_path / "db.prototxt", phase="TRAIN")


def test_pycaffe_net_without_weights_starts_from_the_forks_fillers(tmp_path):
    """LayerSetUp: filters from Filter_Filler, scalers and biases from their fillers, means 0,
    variances 1, the factor 0 (statistics used as stored)."""
    from caffe_compat import pycaffe

    path = tmp_path / "db.prototxt"
    path.write_text(block(2, 3, 'BN_Scaler_Filler { type: "constant" value: 2 } use_BC: true'))
    net = pycaffe.Net(str(path), pycaffe.TEST)
    blobs = [b.data for b in net.params["db"]]
    assert len(blobs) == 10 * 2 + 1
    assert [b.shape for b in blobs[:2]] == [(3, 12, 3, 3)] * 2
    assert blobs[5].shape == (1, 8, 1, 1) and blobs[10].shape == (12, 5, 1, 1)
    assert all((b == 2).all() for b in blobs[2:4] + blobs[12:14])  # scalers
    assert all((b == 0).all() for b in blobs[4:8] + blobs[14:18])  # biases, means
    assert all((b == 1).all() for b in blobs[8:10] + blobs[18:20])  # variances
    assert blobs[-1].tolist() == [0.0] and blobs[0].std() > 0


@pytest.mark.parametrize("bc", [False, True])
def test_synthesis_calibrates_each_inner_batch_norm(tmp_path, bc):
    """Each BN stores the mean and variance of what it sees (times the factor), transition by
    transition: checked with this file's numpy block, not the code under test."""
    from caffe_compat import registry
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize

    text = block(2, 2, "use_BC: true" if bc else "")
    (tmp_path / "db.prototxt").write_text(text)
    weights = synthesize(load_net(tmp_path / "db.prototxt"), method="he", progress=False)
    loaded = load_net(tmp_path / "db.prototxt")
    node = loaded.graph.node("db")
    node.blobs = [np.array(b) for b in weights["db"]]
    node.blobs[-1] = np.array([4.0], np.float32)
    x = np.random.default_rng(2).normal(1.0, 2.0, (3, 5, 7, 9))
    registry.facts("DenseBlock").calibrate(node, [x])
    t, f = 2, 4.0
    b = [np.asarray(v, np.float64) for v in node.blobs]
    y = np.maximum(bn(x, *(b[k * t] for k in (1, 2, 3, 4)), f), 0)  # transition 0 alone
    if bc:
        y = np.einsum("nchw,oc->nohw", y, b[5 * t][:, :, 0, 0])
        pre = y
        np.testing.assert_allclose(
            b[8 * t].reshape(-1) / f, pre.mean(axis=(0, 2, 3)), rtol=2e-3, atol=2e-3
        )
        y = np.maximum(bn(y, *(b[k * t] for k in (6, 7, 8, 9)), f), 0)
    after0 = np.concatenate([x, true_conv3(y, b[0])], axis=1)
    for i, seen in enumerate([x, after0]):
        mean = node.blobs[3 * t + i].reshape(-1) / f
        var = node.blobs[4 * t + i].reshape(-1) / f
        np.testing.assert_allclose(mean, seen.mean(axis=(0, 2, 3)), rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(var, seen.var(axis=(0, 2, 3)), rtol=2e-3, atol=2e-3)
