"""Convolution (grouped, dilated, non-square), Deconvolution and the forks' depthwise aliases against
OpenCV 4 and numpy versions of Caffe's formulas."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


def deconv_ref(x, w, b, stride=1, pad=0, dilation=1, group=1):
    """Caffe's Deconvolution: every input pixel scatters its kernel-weighted copy into the
    output, one kernel tap at a time; then ``pad`` is cut from each border."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(pad), pair(dilation)
    n, c, h, wd = x.shape
    cg, mg, kh, kw = c // group, w.shape[1], w.shape[2], w.shape[3]
    full = np.zeros(
        (n, mg * group, (h - 1) * sh + dh * (kh - 1) + 1, (wd - 1) * sw + dw * (kw - 1) + 1)
    )
    for g in range(group):
        xg, wg = x[:, g * cg : (g + 1) * cg], w[g * cg : (g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                rows, cols = (
                    slice(i * dh, i * dh + (h - 1) * sh + 1, sh),
                    slice(j * dw, j * dw + (wd - 1) * sw + 1, sw),
                )
                full[:, g * mg : (g + 1) * mg, rows, cols] += np.einsum(
                    "nchw,cm->nmhw", xg, wg[:, :, i, j]
                )
    y = full[:, :, ph : full.shape[2] - ph, pw : full.shape[3] - pw]
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def conv_ref(x, w, b, stride=1, pad=0, dilation=1, group=1):
    """Caffe's Convolution, one kernel tap at a time."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(pad), pair(dilation)
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, _, h, wd = x.shape
    m, cg, kh, kw = w.shape
    mg = m // group
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, m, oh, ow))
    for g in range(group):
        for i in range(kh):
            for j in range(kw):
                patch = x[
                    :,
                    g * cg : (g + 1) * cg,
                    i * dh : i * dh + (oh - 1) * sh + 1 : sh,
                    j * dw : j * dw + (ow - 1) * sw + 1 : sw,
                ]
                y[:, g * mg : (g + 1) * mg] += np.einsum(
                    "nchw,mc->nmhw", patch, w[g * mg : (g + 1) * mg, :, i, j]
                )
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def _x(inputs, name="data"):
    return inputs[name].astype(np.float64)


def _wb(blobs):
    return blobs[0].astype(np.float64), (blobs[1].astype(np.float64) if len(blobs) > 1 else None)


DECONV = [
    ("num_output: 4 kernel_size: 3", {}, 5),
    ("num_output: 6 kernel_size: 4 stride: 2 pad: 1", {"stride": 2, "pad": 1}, 5),
    (
        "num_output: 4 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0",
        {"stride": (2, 3), "pad": (1, 0)},
        5,
    ),
    (
        "num_output: 4 kernel_size: 3 dilation: 2 pad: 1 bias_term: false",
        {"dilation": 2, "pad": 1},
        5,
    ),
    ("num_output: 6 kernel_size: 3 group: 3 pad: 1", {"group": 3, "pad": 1}, 6),
    ("num_output: 4 kernel_size: 2 stride: 2 group: 2", {"group": 2, "stride": 2}, 6),
    (
        "num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 6 bias_term: false",
        {"group": 6, "stride": 2, "pad": 1},
        6,
    ),
    ("num_output: 3 kernel_size: 2 stride: 2 pad: 1", {"stride": 2, "pad": 1}, 5),
    (
        "num_output: 4 kernel_size: 3 stride: 3 pad: 2 dilation: 2",
        {"stride": 3, "pad": 2, "dilation": 2},
        5,
    ),
]


@pytest.mark.parametrize(("params", "kwargs", "c"), DECONV)
def test_deconvolution(layer_check, params, kwargs, c):
    prototxt = net(
        f'layer {{ name: "d" type: "Deconvolution" bottom: "data" top: "d" convolution_param {{ {params} }} }}',
        c=c,
    )
    # OpenCV sizes a dilated Deconvolution as if undilated (7x9 -> 7x9 instead of Caffe's 9x11
    # for kernel 3, dilation 2, pad 1): numpy alone is the reference for dilation.
    expected = lambda i, w: {"d": deconv_ref(_x(i), *_wb(w["d"]), **kwargs)}  # noqa: E731
    layer_check(prototxt, expected, opencv="dilation" not in params)


def test_deconvolution_with_two_bottoms_shares_weights(layer_check):
    prototxt = (
        'layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 5 dim: 7 dim: 9 } shape { dim: 2 dim: 5 dim: 7 dim: 9 } } }\n'
        'layer { name: "d" type: "Deconvolution" bottom: "a" bottom: "b" top: "da" top: "db" convolution_param { num_output: 3 kernel_size: 3 stride: 2 } }'
    )

    def expected(inputs, w):
        return {
            top: deconv_ref(_x(inputs, name), *_wb(w["d"]), stride=2)
            for top, name in (("da", "a"), ("db", "b"))
        }

    layer_check(prototxt, expected)


@pytest.mark.parametrize("layer_type", ["ConvolutionDepthwise", "DepthwiseConvolution"])
@pytest.mark.parametrize(
    ("params", "kwargs", "multiplier"),
    [
        ("num_output: 5 kernel_size: 3 pad: 1", {"pad": 1}, 1),
        ("num_output: 5 kernel_size: 3 stride: 2 bias_term: false group: 5", {"stride": 2}, 1),
        (
            "num_output: 10 kernel_h: 3 kernel_w: 1 dilation: 2 pad_h: 2 pad_w: 0",
            {"dilation": 2, "pad": (2, 0)},
            2,
        ),
    ],
)
def test_depthwise_aliases(layer_check, layer_type, params, kwargs, multiplier):
    """The forks' depthwise layers are grouped convolutions with one group per input channel."""
    prototxt = net(
        f'layer {{ name: "dw" type: "{layer_type}" bottom: "data" top: "dw" convolution_param {{ {params} }} }}'
    )

    def expected(inputs, w):
        weight, bias = _wb(w["dw"])
        assert weight.shape[:2] == (5 * multiplier, 1)
        return {"dw": conv_ref(_x(inputs), weight, bias, group=5, **kwargs)}

    layer_check(prototxt, expected, opencv=False)


def test_depthwise_rejects_a_conflicting_group(tmp_path):
    from caffe_compat.errors import NetDefinitionError
    from caffe_compat.ir.load import load_net

    body = 'layer { name: "dw" type: "DepthwiseConvolution" bottom: "data" top: "dw" convolution_param { num_output: 5 kernel_size: 3 group: 1 } }'
    (tmp_path / "n.prototxt").write_text(net(body))
    with pytest.raises(NetDefinitionError, match="group 1 contradicts"):
        load_net(tmp_path / "n.prototxt")


def test_depthwise_reports_what_convolution_cannot_do(tmp_path):
    """The Convolution converters' own checks apply (here: convolution over axis 2)."""
    from caffe_compat import registry
    from caffe_compat.ir.load import load_net

    body = 'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw" convolution_param { num_output: 7 kernel_size: 1 axis: 2 } }'
    (tmp_path / "n.prototxt").write_text(net(body))
    missing = registry.missing_support(
        load_net(tmp_path / "n.prototxt").graph.nodes, ["torch", "onnx"]
    )
    assert [(m.backend, "axis" in m.detail) for m in missing] == [("torch", True), ("onnx", True)]


@pytest.mark.parametrize(
    "conv",
    [
        "num_output: 4 kernel_size: 3",
        "num_output: 6 kernel_size: 3 stride: 2 pad: 1",
        "num_output: 4 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
        "num_output: 4 kernel_size: 3 dilation: 2 pad: 2 bias_term: false",
    ],
)
def test_convolution(layer_parity, conv):
    layer_parity(
        net(
            f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ {conv} }} }}'
        )
    )


def test_grouped_convolution(layer_parity):
    layer_parity(
        net(
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 6 kernel_size: 3 group: 3 pad: 1 } }",
            c=6,
        )
    )


@pytest.mark.parametrize(
    "hw, group, kernel, deviates",
    [
        ((1, 1), 8, 3, True),
        ((1, 5), 8, 3, True),
        ((5, 1), 8, 3, True),
        ((2, 5), 8, 3, False),
        ((1, 1), 1, 3, False),
        ((1, 1), 8, 5, False),
    ],
)
def test_opencv_thin_depthwise_deviation_is_declared_where_it_is_measured(
    tmp_path, hw, group, kernel, deviates
):
    """OpenCV 4's depthwise 3x3 kernel miscomputes a map one pixel high or wide (SSDLite's last
    extra layers): the Convolution entry declares it at those shapes, and where OpenCV 4 can
    read Caffe it is checked to differ from the float64 reference exactly there."""
    from caffe_compat import registry
    from caffe_compat.io import write_caffemodel
    from caffe_compat.ir.load import load_net
    from caffe_compat.reference import forward
    from caffe_compat.verify.opencv import opencv_caffe_available

    path = tmp_path / "dw.prototxt"
    path.write_text(
        f'input: "data" input_shape {{ dim: 1 dim: 8 dim: {hw[0]} dim: {hw[1]} }}\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { '
        f"num_output: 8 group: {group} kernel_size: {kernel} pad: {kernel // 2} }} }}\n"
    )
    loaded = load_net(path)
    node = loaded.graph.node("c")
    shapes = [loaded.graph.shapes[v] for v in node.inputs]
    assert (registry.opencv_deviation(node, shapes) is not None) == deviates
    if opencv_caffe_available() is not None:
        return  # the declaration's truth is measured where OpenCV 4 reads Caffe
    import cv2

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 8 // group, kernel, kernel)).astype(np.float32)
    b = rng.normal(size=8).astype(np.float32)
    write_caffemodel(tmp_path / "dw.caffemodel", loaded.net, {"c": [w, b]})
    x = rng.normal(size=(1, 8, *hw)).astype(np.float32)
    cv = cv2.dnn.readNetFromCaffe(str(path), str(tmp_path / "dw.caffemodel"))
    cv.setInput(x)
    theirs = cv.forward()
    loaded = load_net(path, tmp_path / "dw.caffemodel")
    judge = forward(loaded, {"data": x.astype(np.float64)})["c"]
    assert (float(np.abs(theirs - judge).max()) > 1e-3) == deviates
