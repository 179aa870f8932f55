"""Where OpenCV 4's Caffe reader computes another function than Caffe: each deviation the layer
facts declare (``opencv_deviation``), measured on OpenCV itself. These facts need OpenCV 4; the
parity tests judge every type with the float64 reference wherever OpenCV 4 is absent."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net

from caffe_compat.verify.opencv import opencv_caffe_available

if opencv_caffe_available() is not None:
    pytest.skip(f"OpenCV 4 cross-checks: {opencv_caffe_available()}", allow_module_level=True)


@pytest.mark.parametrize(
    ("layer_type", "params", "ln_or_swish"),
    [
        ("Log", "log_param { base: 10 scale: 2 shift: 1 }", np.log),
        ("Swish", "swish_param { beta: 1.7 }", lambda x: x / (1 + np.exp(-x))),
    ],
)
def test_known_opencv_deviations(tmp_path, cv2_caffe, layer_type, params, ln_or_swish):
    """OpenCV 4 ignores log_param and swish_param: why those cases use numpy as the reference."""
    (tmp_path / "n.prototxt").write_text(
        net(f'layer {{ name: "l" type: "{layer_type}" bottom: "data" top: "l" {params} }}')
    )
    x = np.random.default_rng(0).uniform(0.5, 3, (2, 5, 7, 9)).astype(np.float32)
    cv_net = cv2_caffe.dnn.readNetFromCaffe(str(tmp_path / "n.prototxt"))
    cv_net.setInput(x)
    np.testing.assert_allclose(
        cv_net.forward(), ln_or_swish(x.astype(np.float64)), rtol=1e-5, atol=1e-6
    )


def test_opencv_sizes_dilated_deconvolution_as_undilated(tmp_path, cv2_caffe):
    """The known OpenCV deviation behind ``opencv="dilation" not in params`` above."""
    from caffe_compat.io.writer import definitions_only, write_caffemodel
    from caffe_compat.ir.load import load_net

    params = "num_output: 4 kernel_size: 3 dilation: 2 pad: 1 bias_term: false"
    layer = f'layer {{ name: "d" type: "Deconvolution" bottom: "data" top: "d" convolution_param {{ {params} }} }}'
    (tmp_path / "n.prototxt").write_text(net(layer))
    loaded = load_net(tmp_path / "n.prototxt")
    assert loaded.graph.shapes["d"] == (2, 4, 9, 11)  # Caffe: 1 * (7 - 1) + 2 * (3 - 1) + 1 - 2
    weights = {"d": [np.ones((5, 4, 3, 3), np.float32)]}
    write_caffemodel(tmp_path / "n.caffemodel", definitions_only(loaded.net.layer), weights)
    cv_net = cv2_caffe.dnn.readNetFromCaffe(
        str(tmp_path / "n.prototxt"), str(tmp_path / "n.caffemodel")
    )
    cv_net.setInput(np.ones((2, 5, 7, 9), np.float32))
    assert cv_net.forward().shape == (2, 4, 7, 9)


def test_opencv_ignores_inner_product_transpose(tmp_path, cv2_caffe):
    from caffe_compat.io.prototxt import load_prototxt
    from caffe_compat.io.writer import definitions_only, write_caffemodel

    params = "num_output: 4 transpose: true bias_term: false"
    (tmp_path / "n.prototxt").write_text(
        net(
            f'layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param {{ {params} }} }}'
        )
    )
    weight = np.random.default_rng(0).standard_normal((315, 4)).astype(np.float32)  # K x N
    layers = definitions_only(load_prototxt(tmp_path / "n.prototxt")[0].layer)
    write_caffemodel(tmp_path / "n.caffemodel", layers, {"fc": [weight]})
    cv_net = cv2_caffe.dnn.readNetFromCaffe(
        str(tmp_path / "n.prototxt"), str(tmp_path / "n.caffemodel")
    )
    x = np.random.default_rng(1).standard_normal((2, 5, 7, 9)).astype(np.float32)
    cv_net.setInput(x)
    flat = x.reshape(2, -1).astype(np.float64)
    np.testing.assert_allclose(
        cv_net.forward(), flat @ weight.reshape(4, 315).T, rtol=1e-4, atol=1e-4
    )


def test_opencv_adds_mvn_eps_to_the_variance(tmp_path, cv2_caffe):
    """The known OpenCV deviation the test above works around."""
    (tmp_path / "n.prototxt").write_text(
        net('layer { name: "m" type: "MVN" bottom: "data" top: "m" mvn_param { eps: 0.05 } }')
    )
    x = np.random.default_rng(0).uniform(-0.1, 0.2, (2, 5, 7, 9)).astype(np.float32)
    cv_net = cv2_caffe.dnn.readNetFromCaffe(str(tmp_path / "n.prototxt"))
    cv_net.setInput(x)
    centred = x - x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    theirs = centred / np.sqrt((centred**2).mean(axis=(2, 3), keepdims=True) + 0.05)
    np.testing.assert_allclose(cv_net.forward(), theirs, rtol=1e-5, atol=1e-6)
    x64 = x.astype(np.float64)
    centred64 = x64 - x64.mean(axis=(2, 3), keepdims=True)
    caffe = centred64 / (np.sqrt((centred64**2).mean(axis=(2, 3), keepdims=True)) + 0.05)
    assert np.abs(cv_net.forward() - caffe).max() > 0.1  # Caffe adds eps to the deviation


@pytest.mark.parametrize("params", ["shrink_factor: 2", "zoom_factor: 2 pad_beg: -1 pad_end: -1"])
def test_opencv_interp_reads_no_shrink_factor_or_pads(tmp_path, cv2_caffe, params):
    """Interp's opencv_deviation: OpenCV 4 refuses shrink_factor, or resizes the uncropped input."""
    from caffe_compat.ir.load import load_net
    from caffe_compat.reference import forward

    layer = (
        f'layer {{ name: "i" type: "Interp" bottom: "data" top: "i" interp_param {{ {params} }} }}'
    )
    (tmp_path / "n.prototxt").write_text(net(layer))
    x = np.random.default_rng(1).standard_normal((2, 5, 7, 9)).astype(np.float32)
    caffe = forward(load_net(tmp_path / "n.prototxt"), {"data": x}, outputs=["i"])["i"]
    cv_net = cv2_caffe.dnn.readNetFromCaffe(str(tmp_path / "n.prototxt"))
    cv_net.setInput(x)
    try:
        theirs = cv_net.forward()
    except cv2_caffe.error:
        return  # refused outright
    assert theirs.shape != caffe.shape or not np.allclose(theirs, caffe, atol=1e-3)


def test_opencv_axpy_multiplies_the_third_bottom(tmp_path, cv2_caffe):
    """Axpy's opencv_deviation: SENet's axpy_layer.cpp computes a * x + y (bottoms a, x, y; the
    float64 reference, checked by hand here); OpenCV 4 computes a * y + x."""
    from caffe_compat import registry
    from caffe_compat.ir.load import load_net
    from caffe_compat.reference import forward

    text = (
        'input: "a" input_dim: 1 input_dim: 2 input_dim: 1 input_dim: 1\n'
        'input: "x" input_dim: 1 input_dim: 2 input_dim: 2 input_dim: 2\n'
        'input: "y" input_dim: 1 input_dim: 2 input_dim: 2 input_dim: 2\n'
        'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "out" }\n'
    )
    (tmp_path / "n.prototxt").write_text(text)
    feeds = {
        "a": np.array([2.0, 3.0], np.float32).reshape(1, 2, 1, 1),
        "x": np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2),
        "y": np.full((1, 2, 2, 2), 100.0, np.float32),
    }
    loaded = load_net(tmp_path / "n.prototxt")
    caffe = forward(loaded, feeds, outputs=["out"])["out"]
    np.testing.assert_array_equal(caffe.ravel(), [100, 102, 104, 106, 112, 115, 118, 121])
    cv_net = cv2_caffe.dnn.readNetFromCaffe(str(tmp_path / "n.prototxt"))
    for name, value in feeds.items():
        cv_net.setInput(value, name)
    theirs = cv_net.forward("axpy").ravel()
    np.testing.assert_array_equal(theirs, [200, 201, 202, 203, 304, 305, 306, 307])
    assert "a * y + x" in registry.opencv_deviation(loaded.graph.node("axpy"))
