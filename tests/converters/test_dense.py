"""InnerProduct over any axis and transposed, Concat and Flatten over any axes, and Embed, against
OpenCV 4 (it has no Embed) and numpy versions of Caffe's formulas."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net


@pytest.mark.parametrize("axis", [1, 2, 3, -1, -3])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("bias_term", [True, False])
def test_inner_product_axis_and_transpose(layer_check, axis, transpose, bias_term):
    params = f"num_output: 4 axis: {axis} transpose: {str(transpose).lower()} bias_term: {str(bias_term).lower()}"
    prototxt = net(
        f'layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param {{ {params} }} }}'
    )
    start = axis % 4

    def expected(inputs, w):
        x = inputs["data"].astype(np.float64)
        flat = x.reshape(*x.shape[:start], -1)
        weight = w["fc"][0].astype(np.float64)
        y = flat @ (weight if transpose else weight.T)
        return {"fc": y + w["fc"][1] if bias_term else y}

    # OpenCV's Caffe reader does not resolve a negative InnerProduct axis, and ignores
    # transpose (it reads the K x N blob as N x K; see the test below).
    layer_check(prototxt, expected, opencv=axis > 0 and not transpose)


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


CONCAT = 'layer {{ name: "in" type: "Input" top: "a" top: "b" top: "c" input_param {{ {} }} }}\n'


@pytest.mark.parametrize(
    ("params", "axis"),
    [("axis: 0", 0), ("axis: 2", 2), ("axis: 3", 3), ("axis: -1", 3), ("concat_dim: 2", 2)],
)
def test_concat_axis(layer_check, params, axis):
    sizes = (1, 2, 3) if axis else (2, 2, 2)
    shapes = []
    for n in sizes:
        dims = [2, 5, 7, 9]
        dims[axis] = n
        shapes.append("shape { " + " ".join(f"dim: {d}" for d in dims) + " }")
    prototxt = (
        CONCAT.format(" ".join(shapes))
        + f'layer {{ name: "cat" type: "Concat" bottom: "a" bottom: "b" bottom: "c" top: "cat" concat_param {{ {params} }} }}'
    )
    expected = lambda i, w: {"cat": np.concatenate([i["a"], i["b"], i["c"]], axis=axis)}  # noqa: E731
    layer_check(prototxt, expected, opencv="concat_dim" not in params)  # OpenCV: no concat_dim


@pytest.mark.parametrize(
    ("params", "shape"),
    [
        ("axis: 2", lambda n: (n, 5, 63)),
        ("axis: 1 end_axis: 2", lambda n: (n, 35, 9)),
        ("axis: 0 end_axis: -1", lambda n: (n * 315,)),
        ("axis: -2 end_axis: -1", lambda n: (n, 5, 63)),
        ("axis: 2 end_axis: 2", lambda n: (n, 5, 7, 9)),
        ("axis: 0 end_axis: 1", lambda n: (n * 5, 7, 9)),
    ],
)
def test_flatten_axes(layer_check, params, shape):
    prototxt = net(
        f'layer {{ name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param {{ {params} }} }}'
    )
    expected = lambda i, w: {"f": i["data"].reshape(shape(len(i["data"])))}  # noqa: E731
    layer_check(prototxt, expected, opencv="-" not in params)


def indices(n: int) -> dict[str, np.ndarray]:
    return {"data": np.random.default_rng(n).integers(0, 11, (n, 3, 4)).astype(np.float32)}


@pytest.mark.parametrize("bias_term", [True, False])
def test_embed(layer_check, bias_term):
    prototxt = (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 } } }\n'
        f'layer {{ name: "e" type: "Embed" bottom: "data" top: "e" embed_param {{ num_output: 6 input_dim: 11 bias_term: {str(bias_term).lower()} }} }}'
    )
    rng = np.random.default_rng(0)
    blobs = {
        "e": [rng.standard_normal((11, 6)).astype(np.float32)]
        + ([rng.standard_normal(6).astype(np.float32)] if bias_term else [])
    }

    def expected(inputs, w):
        rows = w["e"][0][inputs["data"].astype(np.int64)]
        return {"e": rows + w["e"][1] if bias_term else rows}

    layer_check(prototxt, expected, feeds=indices, blobs=blobs, opencv=False)
