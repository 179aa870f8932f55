"""Caffe's fillers, and the blobs a layer starts from before training: each type's defaults as
its LayerSetUp sets them (values read off BVLC Caffe's and the SSD fork's layer sources), the
same in pycaffe's Net without weights and in ``synth --method fillers``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffe_compat.ir.load import load_net
from caffe_compat.proto import caffe_pb2
from caffe_compat.pycaffe import TEST, Net
from caffe_compat.tools.fillers import caffe_fill, caffe_fillers, fill
from caffe_compat.tools.synth import synthesize

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }\n'
# Every layer type with blobs, no filler declared: Caffe's defaults fill them.
DEFAULTS = INPUT + (
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }\n'
    'layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv" }\n'
    'layer { name: "prelu_shared" type: "PReLU" bottom: "conv" top: "p2" prelu_param { channel_shared: true } }\n'
    'layer { name: "bn" type: "BatchNorm" bottom: "p2" top: "bn" }\n'
    'layer { name: "scale" type: "Scale" bottom: "bn" top: "scale" scale_param { bias_term: true } }\n'
    'layer { name: "bias" type: "Bias" bottom: "scale" top: "bias" }\n'
    'layer { name: "norm" type: "Normalize" bottom: "bias" top: "norm" }\n'
    'layer { name: "fc" type: "InnerProduct" bottom: "norm" top: "fc" inner_product_param { num_output: 3 } }\n'
)
EXPECTED = {  # blob values Caffe's LayerSetUp gives these layers
    "conv": [0.0, 0.0],  # weight_filler and bias_filler default to constant 0
    "prelu": [0.25],  # PReLULayer: constant 0.25 unless prelu_param.filler
    "prelu_shared": [0.25],
    "bn": [0.0, 0.0, 0.0],  # BatchNormLayer: caffe_set(0) on all three
    "scale": [1.0, 0.0],  # ScaleLayer: constant 1 unless filler; bias_filler constant 0
    "bias": [0.0],
    "norm": [1.0],  # NormalizeLayer (SSD): constant 1 unless scale_filler
    "fc": [0.0, 0.0],
}


def _write(tmp_path, text):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


def test_every_type_starts_from_caffes_defaults_in_pycaffe_and_synth(tmp_path):
    path = _write(tmp_path, DEFAULTS)
    net = Net(str(path), TEST)
    synthesized = synthesize(load_net(path), seed=0, method="fillers")
    for layer, values in EXPECTED.items():
        ours = [blob.data for blob in net.params[layer]]
        assert len(ours) == len(values) == len(synthesized[layer]), layer
        for mine, synth, value in zip(ours, synthesized[layer], values):
            np.testing.assert_array_equal(mine, np.float32(value), err_msg=layer)
            np.testing.assert_array_equal(synth, np.float32(value), err_msg=layer)


def test_declared_fillers_win_over_the_defaults(tmp_path):
    text = INPUT + (
        'layer { name: "prelu" type: "PReLU" bottom: "data" top: "p" prelu_param { filler { type: "constant" value: 0.5 } } }\n'
        'layer { name: "scale" type: "Scale" bottom: "p" top: "s" scale_param { filler { type: "constant" value: 2 } bias_term: true bias_filler { type: "constant" value: -1 } } }\n'
        'layer { name: "norm" type: "Normalize" bottom: "s" top: "n" norm_param { scale_filler { type: "constant" value: 20 } } }\n'
    )
    path = _write(tmp_path, text)
    net = Net(str(path), TEST)
    synthesized = synthesize(load_net(path), seed=0, method="fillers")
    for layer, values in {"prelu": [0.5], "scale": [2.0, -1.0], "norm": [20.0]}.items():
        for mine, synth, value in zip(net.params[layer], synthesized[layer], values):
            np.testing.assert_array_equal(mine.data, np.float32(value))
            np.testing.assert_array_equal(synth, np.float32(value))


def test_a_two_bottom_scale_fills_only_its_bias_from_bias_filler():
    """With two bottoms ScaleLayer makes no scale blob: its one blob is the bias (bias_filler)."""
    layer = caffe_pb2.LayerParameter(name="s", type="Scale", bottom=["x", "y"])
    layer.scale_param.bias_term = True
    layer.scale_param.bias_filler.value = 0.5
    (bias,) = caffe_fill(layer, [(3,)], np.random.default_rng(0))
    np.testing.assert_array_equal(bias, np.float32(0.5))
    assert caffe_fillers(caffe_pb2.LayerParameter(type="Bias", bottom=["x", "y"])) == []


def test_a_type_without_fillers_starts_at_zero():
    layer = caffe_pb2.LayerParameter(name="m", type="NoSuchType")
    assert caffe_fillers(layer) == []
    (blob,) = caffe_fill(layer, [(2, 2)], np.random.default_rng(0))
    np.testing.assert_array_equal(blob, 0.0)


def test_reading_the_defaults_leaves_the_definition_alone():
    layer = caffe_pb2.LayerParameter(name="s", type="Scale", bottom=["x"])
    caffe_fillers(layer)
    assert not layer.scale_param.HasField("filler")


def test_caffe_fillers():
    rng = np.random.default_rng(0)
    f = caffe_pb2.FillerParameter(type="xavier")
    w = fill(f, (64, 32, 3, 3), rng)
    assert np.abs(w).max() <= math.sqrt(3.0 / (32 * 9))
    f = caffe_pb2.FillerParameter(type="msra")
    assert abs(fill(f, (256, 64, 3, 3), rng).std() - math.sqrt(2.0 / (64 * 9))) < 0.002
    bilinear = fill(caffe_pb2.FillerParameter(type="bilinear"), (2, 1, 4, 4), rng)
    ramp = np.array([0.25, 0.75, 0.75, 0.25])  # upsampling by 2: kernel 4, f = 2, c = 0.75
    np.testing.assert_allclose(bilinear[0, 0], np.outer(ramp, ramp))
    with pytest.raises(ValueError, match="unknown filler"):
        fill(caffe_pb2.FillerParameter(type="nope"), (2,), rng)


def test_sparse_gaussian_keeps_sparse_over_shape0_of_the_values():
    """filler.hpp: each value survives with probability sparse / shape(0) (Caffe's "num_outputs";
    for an InnerProduct weight that is the output count), blobs of any rank."""
    rng = np.random.default_rng(3)
    f = caffe_pb2.FillerParameter(type="gaussian", std=1.0, sparse=5)
    w = fill(f, (50, 400), rng)
    assert abs((w != 0).mean() - 5 / 50) < 0.01  # 20,000 draws: 3 sigma is 0.0064
    bias = fill(f, (20,), rng)  # one axis is enough for Caffe's CHECK_GE(num_axes, 1)
    assert (bias == 0).any() and (bias != 0).any()
