"""InnerProduct over any axis and transposed, against OpenCV 4 (which ignores transpose) and numpy
versions of Caffe's formula; with ReLU, Dropout and Softmax on top as in the Levi-Hassner head."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net


def test_inner_product_relu_dropout_softmax(layer_parity):
    layer_parity(
        net(
            'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 7 } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "fc" top: "fc" relu_param { negative_slope: 0.1 } }\n'
            'layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" }\n'
            'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }'
        )
    )


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
