"""BVLC's examples/net_surgery notebook, transcribed onto small nets.

Part 1 ("designer filters"): reshape the input to an image's size, run, set one filter to a
Gaussian blur by hand, run again; the blurred channel must equal numpy's own correlation.
Part 2 ("casting a classifier into a fully convolutional network"): copy fc6/fc7 into convolution
layers with ``.flat``, save, reload: the weights round-trip byte for byte, the saved file parses
with plain protobuf as a V2 NetParameter, and the fully convolutional net's output at each
position equals the classifier on that window (checked with numpy matrix products).
"""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat.proto import caffe_pb2

CONV = """
name: "convolution"
input: "data"
input_shape { dim: 1 dim: 1 dim: 100 dim: 100 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 5 stride: 1
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0 } } }
"""

CLASSIFIER = """
name: "mini_caffenet"
input: "data"
input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3
    weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.05 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool1" top: "fc6"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: -0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc7" top: "prob" }
"""

FULL_CONV = """
name: "mini_caffenet_full_conv"
input: "data"
input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc6-conv" type: "Convolution" bottom: "pool1" top: "fc6-conv"
  convolution_param { num_output: 6 kernel_size: 5 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6-conv" top: "fc6-conv" }
layer { name: "fc7-conv" type: "Convolution" bottom: "fc6-conv" top: "fc7-conv"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "prob" type: "Softmax" bottom: "fc7-conv" top: "prob" }
"""


def _correlate_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D cross-correlation without padding (what a convolution layer computes)."""
    windows = np.lib.stride_tricks.sliding_window_view(image, kernel.shape)
    return np.einsum("ijkl,kl->ij", windows, kernel)


def test_designer_filters(caffe, write_net):
    caffe.set_random_seed(3)
    net = caffe.Net(write_net(CONV), caffe.TEST)
    assert net.blobs["data"].data.shape == (1, 1, 100, 100)

    rng = np.random.default_rng(0)
    im = rng.random((60, 80)).astype(np.float32)  # stands in for the grayscale cat
    im_input = im[np.newaxis, np.newaxis, :, :]
    net.blobs["data"].reshape(*im_input.shape)
    net.blobs["data"].data[...] = im_input
    net.forward()
    assert net.blobs["conv"].data.shape == (1, 3, 56, 76)
    before = net.blobs["conv"].data[0, 1].copy()

    # Filter 0 becomes a Gaussian blur, its bias 1.
    x, y = np.mgrid[-2:3, -2:3]
    blur = np.exp(-(x**2 + y**2) / 2.0)
    blur = (blur / blur.sum()).astype(np.float32)
    net.params["conv"][0].data[0] = blur
    net.params["conv"][1].data[0] = 1.0
    net.forward()

    expected = _correlate_valid(im.astype(np.float64), blur.astype(np.float64)) + 1.0
    np.testing.assert_allclose(net.blobs["conv"].data[0, 0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(net.blobs["conv"].data[0, 1], before)  # untouched filter


@pytest.fixture
def classifier_files(caffe, write_net, tmp_path):
    caffe.set_random_seed(5)
    prototxt = write_net(CLASSIFIER, "classifier.prototxt")
    weights = str(tmp_path / "classifier.caffemodel")
    caffe.Net(prototxt, caffe.TEST).save(weights)
    return prototxt, weights


def test_fc_to_conv_surgery_round_trip(caffe, write_net, tmp_path, classifier_files):
    prototxt, weights = classifier_files
    full_conv_prototxt = write_net(FULL_CONV, "full_conv.prototxt")
    surgery_path = str(tmp_path / "full_conv.caffemodel")

    # --- the notebook, transcribed ---------------------------------------------------------------
    net = caffe.Net(prototxt, weights, caffe.TEST)
    params = ["fc6", "fc7"]
    fc_params = {pr: (net.params[pr][0].data, net.params[pr][1].data) for pr in params}
    for fc in params:
        print(f"{fc} weights are {fc_params[fc][0].shape} dimensional and biases are "
              f"{fc_params[fc][1].shape} dimensional")  # fmt: skip

    net_full_conv = caffe.Net(full_conv_prototxt, weights, caffe.TEST)
    params_full_conv = ["fc6-conv", "fc7-conv"]
    conv_params = {
        pr: (net_full_conv.params[pr][0].data, net_full_conv.params[pr][1].data)
        for pr in params_full_conv
    }
    before_surgery = net_full_conv.forward(data=np.ones((1, 3, 16, 16), np.float32))
    before_surgery = before_surgery["prob"].copy()
    for pr, pr_conv in zip(params, params_full_conv):
        conv_params[pr_conv][0].flat = fc_params[pr][0].flat  # flat unrolls the arrays
        conv_params[pr_conv][1][...] = fc_params[pr][1]
    net_full_conv.save(surgery_path)
    # ----------------------------------------------------------------------------------------------

    assert conv_params["fc6-conv"][0].shape == (6, 4, 5, 5)
    # Layers the weights file lacks keep their fillers (constant 0 here); conv1 was copied.
    assert np.array_equal(net_full_conv.params["conv1"][0].data, net.params["conv1"][0].data)

    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
    out = net_full_conv.forward(data=image)["prob"]
    assert out.shape == (1, 3, 3, 3)
    assert not np.allclose(out, before_surgery)  # the edits reached the forward pass

    # Each output position is the classifier on a 12x12 window, stride 2 (the pooling's).
    w6, b6 = (a.astype(np.float64) for a in fc_params["fc6"])
    w7, b7 = (a.astype(np.float64) for a in fc_params["fc7"])
    for oy in range(3):
        for ox in range(3):
            window = image[:, :, 2 * oy : 2 * oy + 12, 2 * ox : 2 * ox + 12]
            net.forward(data=window)
            pool1 = net.blobs["pool1"].data.reshape(-1).astype(np.float64)
            fc7 = w7 @ np.maximum(w6 @ pool1 + b6, 0) + b7
            expected = np.exp(fc7 - fc7.max()) / np.exp(fc7 - fc7.max()).sum()
            np.testing.assert_allclose(out[0, :, oy, ox], expected, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(net.blobs["prob"].data[0], expected, rtol=1e-4, atol=1e-6)

    # Reload: byte-identical weights, same outputs.
    reloaded = caffe.Net(full_conv_prototxt, surgery_path, caffe.TEST)
    for name, blobs in net_full_conv.params.items():
        for saved, loaded in zip(blobs, reloaded.params[name]):
            assert saved.data.tobytes() == loaded.data.tobytes()
    np.testing.assert_array_equal(reloaded.forward(data=image)["prob"], out)

    # The file is a V2 NetParameter that plain protobuf (and so Caffe) parses.
    with open(surgery_path, "rb") as handle:
        parsed = caffe_pb2.NetParameter.FromString(handle.read())
    assert parsed.name == "mini_caffenet_full_conv" and not parsed.layers
    assert [layer.name for layer in parsed.layer] == reloaded._layer_names
    assert all(layer.phase == caffe_pb2.TEST for layer in parsed.layer)
    fc6 = next(layer for layer in parsed.layer if layer.name == "fc6-conv")
    assert list(fc6.blobs[0].shape.dim) == [6, 4, 5, 5]
    np.testing.assert_array_equal(
        np.array(fc6.blobs[0].data, np.float32), fc_params["fc6"][0].reshape(-1)
    )
