"""Softmax over any axis against numpy (and OpenCV 4 on axis 1 in test_inner_product.py)."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -2])
def test_softmax_over_any_axis(layer_check, axis):
    prototxt = net(
        f'layer {{ name: "sm" type: "Softmax" bottom: "data" top: "sm" softmax_param {{ axis: {axis} }} }}'
    )

    def expected(inputs, w):
        x = inputs["data"].astype(np.float64)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return {"sm": e / e.sum(axis=axis, keepdims=True)}

    layer_check(prototxt, expected)
