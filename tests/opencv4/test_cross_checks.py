"""OpenCV 4 as a cross-check of things only it can judge: the forks' depthwise layers against OpenCV
running the same weights as a grouped Convolution, the float64 reference against OpenCV's reader
on the Levi-Hassner net, and OpenCV 4's own Haar cascade on a real face. OpenCV 5 has neither a
Caffe reader nor Haar cascades; the parity tests judge with the float64 reference there."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net

from caffe_compat.app.faces import HaarDetector, haar_available
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.reference import forward
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify.opencv import opencv_caffe_available

if opencv_caffe_available() is not None:
    pytest.skip(f"OpenCV 4 cross-checks: {opencv_caffe_available()}", allow_module_level=True)


@pytest.mark.parametrize("layer_type", ["ConvolutionDepthwise", "DepthwiseConvolution"])
def test_depthwise_matches_opencv_grouped_convolution(tmp_path, cv2_caffe, layer_type):
    """Our depthwise layer against OpenCV running the same weights as Convolution with group C."""
    from caffe_compat.converters.onnx.export import to_onnx
    from caffe_compat.converters.torch.model import CaffeNet
    from caffe_compat.ir.load import load_net
    from caffe_compat.verify.backends import run_onnxruntime, run_torch

    layer = 'layer {{ name: "dw" type: "{}" bottom: "data" top: "dw" convolution_param {{ num_output: 5 kernel_size: 3 stride: 2 pad: 1 {} }} }}'
    (tmp_path / "dw.prototxt").write_text(net(layer.format(layer_type, "")))
    (tmp_path / "conv.prototxt").write_text(net(layer.format("Convolution", "group: 5")))
    loaded = load_net(tmp_path / "dw.prototxt")
    write_caffemodel(
        tmp_path / "w.caffemodel",
        definitions_only(loaded.net.layer),
        synthesize(loaded, method="he"),
    )
    loaded = load_net(tmp_path / "dw.prototxt", tmp_path / "w.caffemodel")
    x = np.random.default_rng(0).standard_normal((2, 5, 7, 9)).astype(np.float32)
    cv_net = cv2_caffe.dnn.readNetFromCaffe(
        str(tmp_path / "conv.prototxt"), str(tmp_path / "w.caffemodel")
    )
    cv_net.setInput(x)
    reference = cv_net.forward()
    ours = run_torch(loaded.graph, {"data": x}, ["dw"], model=CaffeNet(loaded.graph))["dw"]
    onnx_out = run_onnxruntime(to_onnx(loaded.graph).SerializeToString(), {"data": x})["dw"]
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(onnx_out, reference, rtol=1e-4, atol=1e-5)


def test_opencv_agrees_on_levi_hassner(cv2_caffe, shared):
    prototxt = shared / "deploy_age.prototxt"
    weights = shared / "caffe_reference" / "age_seed3_caffe_written.caffemodel"
    blobs_path = shared / "caffe_reference" / "age_seed3_blobs.npz"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent")
    net = load_net(prototxt, weights)
    with np.load(blobs_path) as data:
        x = data["data"][:2]
    layers = ["conv1", "pool1", "norm1", "conv2", "norm2", "conv3", "pool5", "fc6", "fc8", "prob"]
    values = [net.graph.node(layer).outputs[0] for layer in layers]  # a layer's own output
    ours = forward(net, {"data": x}, outputs=values)
    reader = cv2_caffe.dnn.readNetFromCaffe(str(prototxt), str(weights))
    reader.setPreferableBackend(cv2_caffe.dnn.DNN_BACKEND_OPENCV)
    reader.enableFusion(False)
    if hasattr(reader, "enableWinograd"):
        reader.enableWinograd(False)
    reader.setInput(x)
    for value, array in zip(values, reader.forward(layers)):
        ref = ours[value].reshape(array.shape)
        error = float(np.abs(array - ref).max())
        assert error <= max(1e-4 * float(np.abs(ref).max()), 1e-5), (value, error)


def test_haar_finds_the_astronaut_where_present(astronaut):
    if haar_available() is not None:
        pytest.skip(f"no Haar cascade here: {haar_available()}")
    (found,) = HaarDetector()(astronaut)
    x, y, w, h = found.box
    assert 150 < x + w / 2 < 300 and 50 < y + h / 2 < 180


# The astronaut's face in skimage.data.astronaut() (512 x 512), read off the image by eye.
FACE_CENTRE = (225, 112)


def test_haar_finds_the_astronaut_face(astronaut):
    found = HaarDetector()(astronaut)
    assert len(found) == 1, found
    x, y, w, h = found[0].box
    assert x >= 0 and y >= 0 and x + w <= 512 and y + h <= 512
    assert 60 <= w <= 140 and 60 <= h <= 140  # a face of a 512-pixel portrait, not a speck
    assert x <= FACE_CENTRE[0] <= x + w and y <= FACE_CENTRE[1] <= y + h


def test_haar_boxes_scale_back_from_a_shrunken_search(astronaut):
    import cv2

    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_LINEAR)
    found = HaarDetector(max_side=512)(big)  # searched at 512, reported at 1536
    assert len(found) == 1
    x, y, w, h = found[0].box
    assert x <= 3 * FACE_CENTRE[0] <= x + w and y <= 3 * FACE_CENTRE[1] <= y + h
    assert 180 <= w <= 420
