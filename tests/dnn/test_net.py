"""OpenCV's layer API by Caffe name on the converted net: the calls of OpenCV's own samples/dnn
scripts for Caffe models (Apache-2.0; the calls are written out here, not the scripts copied).

colorization.py (OpenCV 4.x samples/dnn) reads the net, then writes two layers' blobs by name:
``net.getLayer(net.getLayerId('class8_ab')).blobs = [pts_in_hull]`` and the same for the Scale
layer ``conv8_313_rh`` (written as 1 x 313). The net here is a small trunk with the released
model's tail (names, types, parameters); the weights file lacks those two layers, as the released
caffemodel does. Judges: OpenCV 4's own Caffe reader given the same edits (OpenCV 4 environment)
and, everywhere, the float64 reference on the same weights.
"""

from __future__ import annotations

import numpy as np
import pytest
from _dnn_files import CONVERT_MODES, OPENCV4, cv2, write_net

from caffe_compat import dnn
from caffe_compat.errors import CaffeCompatError
from caffe_compat.ir.load import load_net
from caffe_compat.reference import forward as reference_forward
from caffe_compat.tools.synth import synthesize

# A small trunk (stride 8 then a 2x deconvolution: 224 -> 56, as the released net) and the
# released colorization_deploy_v2 tail: conv8_313 -> Scale (no bias) -> Softmax -> 1x1 conv.
COLORIZATION = """name: "colorization-tail"
layer { name: "data_l" type: "Input" top: "data_l" input_param { shape { dim: 1 dim: 1 dim: 224 dim: 224 } } }
layer { name: "bw_conv1_1" type: "Convolution" bottom: "data_l" top: "conv1_1" convolution_param { num_output: 8 pad: 1 kernel_size: 3 stride: 8 } }
layer { name: "relu1_1" type: "ReLU" bottom: "conv1_1" top: "conv1_1" }
layer { name: "conv1_2norm" type: "BatchNorm" bottom: "conv1_1" top: "conv1_2norm" batch_norm_param { } }
layer { name: "conv6_1" type: "Convolution" bottom: "conv1_2norm" top: "conv6_1" convolution_param { num_output: 16 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "relu6_1" type: "ReLU" bottom: "conv6_1" top: "conv6_1" }
layer { name: "conv8_1" type: "Deconvolution" bottom: "conv6_1" top: "conv8_1" convolution_param { num_output: 16 kernel_size: 4 pad: 1 stride: 2 } }
layer { name: "relu8_1" type: "ReLU" bottom: "conv8_1" top: "conv8_1" }
layer { name: "conv8_313" type: "Convolution" bottom: "conv8_1" top: "conv8_313" convolution_param { num_output: 313 kernel_size: 1 stride: 1 dilation: 1 } }
layer { name: "conv8_313_rh" type: "Scale" bottom: "conv8_313" top: "conv8_313_rh" scale_param { bias_term: false filler { type: 'constant' value: 2.606 } } }
layer { name: "class8_313_rh" type: "Softmax" bottom: "conv8_313_rh" top: "class8_313_rh" }
layer { name: "class8_ab" type: "Convolution" bottom: "class8_313_rh" top: "class8_ab" convolution_param { num_output: 2 kernel_size: 1 stride: 1 dilation: 1 bias_term: false } }
"""
SET_BY_SCRIPT = ("class8_ab", "conv8_313_rh")


@pytest.fixture(scope="module")
def colorization(tmp_path_factory):
    """(prototxt, caffemodel without the script's two layers, every layer's blobs, hull)."""
    folder = tmp_path_factory.mktemp("colorization")
    prototxt = folder / "colorization_deploy_v2.prototxt"
    prototxt.write_text(COLORIZATION)
    blobs = synthesize(load_net(prototxt), seed=2, method="he", progress=False)
    stored = {k: v for k, v in blobs.items() if k not in SET_BY_SCRIPT}
    hull = np.random.default_rng(3).uniform(-110, 110, (313, 2))  # stands for pts_in_hull.npy
    return prototxt, write_net(folder, prototxt, stored), blobs, hull


def _l_channel(photo: np.ndarray) -> np.ndarray:
    """The sample's preprocessing: RGB in [0, 1] -> Lab, L resized to 224 x 224, minus 50."""
    img_rgb = (photo[:, :, [2, 1, 0]] * 1.0 / 255).astype(np.float32)
    img_rs = cv2.resize(img_rgb, (224, 224))
    img_l_rs = cv2.cvtColor(img_rs, cv2.COLOR_RGB2Lab)[:, :, 0]
    img_l_rs -= 50
    return cv2.dnn.blobFromImage(img_l_rs)


def _judge(prototxt, blobs, x, edits) -> np.ndarray:
    """The float64 reference on the net's weights with the script's edits (Caffe's shapes)."""
    loaded = load_net(prototxt)
    for node in loaded.graph.nodes:
        shapes = loaded.inference.params.get(node.name) or []
        node.blobs = [
            np.asarray(b, np.float32).reshape(s) for b, s in zip(blobs.get(node.name, []), shapes)
        ]
        if node.name in edits:
            node.blobs = [
                np.asarray(b, np.float32).reshape(s) for b, s in zip(edits[node.name], shapes)
            ]
    return reference_forward(loaded, {"data_l": x}, ["class8_ab"])["class8_ab"]


def _edit(net, hull: np.ndarray, scale: float = 2.606) -> dict:
    """The sample's two lines, verbatim but for the data's name."""
    pts_in_hull = hull.transpose().reshape(2, 313, 1, 1)
    net.getLayer(net.getLayerId("class8_ab")).blobs = [pts_in_hull.astype(np.float32)]
    net.getLayer(net.getLayerId("conv8_313_rh")).blobs = [np.full([1, 313], scale, np.float32)]
    return {"class8_ab": [pts_in_hull], "conv8_313_rh": [np.full(313, scale)]}


@pytest.mark.parametrize("convert", CONVERT_MODES)
def test_colorization_sample(colorization, astronaut, convert):
    prototxt, caffemodel, blobs, hull = colorization
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=convert)
    edits = _edit(net, hull)
    x = _l_channel(astronaut)
    net.setInput(x)
    ab_dec = net.forward()[0, :, :, :].transpose((1, 2, 0))
    assert ab_dec.shape == (56, 56, 2)
    judge = _judge(prototxt, blobs, x, edits)[0].transpose(1, 2, 0)
    assert float(np.abs(ab_dec - judge).max()) <= 1e-4 * float(np.abs(judge).max())
    assert float(ab_dec.std()) > 1.0  # colours vary over the image: not a constant output
    if OPENCV4:
        theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        _edit(theirs, hull)
        theirs.setInput(x)
        reference = theirs.forward()[0].transpose(1, 2, 0)
        assert float(np.abs(ab_dec - reference).max()) <= 1e-4 * float(np.abs(reference).max())


@pytest.mark.parametrize("convert", CONVERT_MODES)
def test_a_blob_edit_is_never_a_silent_no_op(colorization, astronaut, convert):
    """Zeroing class8_ab zeroes the output (the issue: it stayed at 31.48). The converted net
    also takes edits after a forward (OpenCV 4's own net ignores those: measured on 4.14, so
    there only the edit before the first forward is checked), and an in-place change of a read
    blob raises instead of being lost."""
    prototxt, caffemodel, _, hull = colorization
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=convert)
    _edit(net, hull)
    net.setInput(_l_channel(astronaut))
    converted = isinstance(net, dnn.ConvertedNet)
    if converted:
        assert float(np.abs(net.forward()).max()) > 1.0
    layer = net.getLayer(net.getLayerId("class8_ab"))
    layer.blobs = [np.zeros((2, 313, 1, 1), np.float32)]
    assert float(np.abs(net.forward()).max()) == 0.0
    if converted:
        with pytest.raises(ValueError, match="read-only"):
            layer.blobs[0][:] = 1.0
        np.testing.assert_array_equal(net.getParam("class8_ab", 0), np.zeros((2, 313, 1, 1)))


def test_layer_api_by_caffe_name(colorization):
    prototxt, caffemodel, blobs, _ = colorization
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    names = net.getLayerNames()
    assert names[0] == "bw_conv1_1" and names[-1] == "class8_ab"
    assert [net.getLayerId(n) for n in names] == list(range(1, len(names) + 1))
    assert net.getLayerId("no_such_layer") == -1
    conv = net.getLayer(net.getLayerId("bw_conv1_1"))
    assert (conv.name, conv.type) == ("bw_conv1_1", "Convolution")
    assert net.getLayer("conv8_313_rh").type == "Scale"
    for got, want in zip(conv.blobs, blobs["bw_conv1_1"]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(net.getParam(1, 1), blobs["bw_conv1_1"][1])
    assert net.getLayer("class8_ab").blobs == []  # not in the weights file yet
    if OPENCV4:
        # OpenCV 4 names a Convolution layer after its top ("conv1_1" for "bw_conv1_1").
        theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        assert theirs.getLayerNames()[0] == "conv1_1"
        assert net.getLayerId("conv1_1") == net.getLayerId("bw_conv1_1") == 1
        for name in theirs.getLayerNames():
            assert net.getLayerId(name) == theirs.getLayerId(name)
            assert net.getLayer(name).type == theirs.getLayer(theirs.getLayerId(name)).type


def test_bad_layer_calls_raise_one_clear_line(colorization):
    prototxt, caffemodel, _, _ = colorization
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    cases = [
        (lambda: net.getLayer(net.getLayerId("conv8_313_RH")), "no layer with id -1"),
        (lambda: net.getLayer("nope"), 'no layer named "nope"'),
        (lambda: setattr(net.getLayer("relu1_1"), "blobs", [np.ones(3)]), "no weights to set"),
        (
            lambda: setattr(net.getLayer("conv8_313_rh"), "blobs", [np.ones(312, np.float32)]),
            "blob 0 needs 313 values (shape [313]), got shape [312]",
        ),
        (lambda: setattr(net.getLayer("class8_ab"), "blobs", np.ones(626)), "list of arrays"),
        (lambda: net.setParam("bw_conv1_1", 2, np.ones(8)), "has 2 blob(s), no blob 2"),
        (lambda: net.forward(), "2 layer(s) have no weights yet: conv8_313_rh, class8_ab"),
    ]
    for call, fragment in cases:
        with pytest.raises(CaffeCompatError) as caught:
            call()
        assert fragment in str(caught.value) and "\n" not in str(caught.value), caught.value


def test_prototxt_alone_then_blobs_by_id(colorization, astronaut):
    """readNetFromCaffe(prototxt) without weights, every layer's blobs then written by id, and a
    setParam after the first forward. (OpenCV 4's own reader cannot take these calls on this
    net: its BatchNorm layer asserts it has blobs when getLayer builds it, and its setParam
    cannot add a blob to an empty layer; measured on 4.14.)"""
    prototxt, _, blobs, _ = colorization
    net = dnn.readNetFromCaffe(str(prototxt), convert=True if OPENCV4 else None)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    for layer_id, name in enumerate(net.getLayerNames(), start=1):
        caffe_name = {"conv1_1": "bw_conv1_1"}.get(name, name)  # OpenCV 4's name for the conv
        if caffe_name in blobs:
            shaped = [a.reshape(1, -1) if a.ndim == 1 else a for a in blobs[caffe_name]]
            net.getLayer(layer_id).blobs = shaped
    x = _l_channel(astronaut)
    net.setInput(x)
    out = net.forward()
    judge = _judge(prototxt, blobs, x, {})
    assert float(np.abs(out - judge).max()) <= 1e-4 * float(np.abs(judge).max())
    net.setParam(net.getLayerId("conv8_313_rh"), 0, np.ones(313, np.float32))
    edits = {"conv8_313_rh": [np.ones(313)]}
    judge = _judge(prototxt, blobs, x, edits)
    assert float(np.abs(net.forward() - judge).max()) <= 1e-4 * float(np.abs(judge).max())
    middle = net.forward("conv8_313_rh")  # the every-value net sees the edit too
    np.testing.assert_allclose(middle, net.forward("conv8_313"), rtol=1e-6, atol=1e-6)
