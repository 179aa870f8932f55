"""ArgMax and Reduction (OpenCV 4's Caffe reader has neither: numpy versions of Caffe's formulas are
the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net


def caffe_top_k(x: np.ndarray, k: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Caffe's partial_sort of (value, index) pairs with std::greater: values descending, and
    among equal values the higher index first."""
    moved = np.moveaxis(x, axis, -1)
    index = np.broadcast_to(np.arange(moved.shape[-1]), moved.shape)
    order = np.lexsort((-index, -moved), axis=-1)[..., :k]
    values = np.take_along_axis(moved, order, axis=-1)
    return np.moveaxis(values, -1, axis), np.moveaxis(order.astype(np.float64), -1, axis)


def argmax_ref(x: np.ndarray, k: int, out_max_val: bool, axis: int | None) -> np.ndarray:
    if axis is not None:
        values, index = caffe_top_k(x, k, axis)
        return values if out_max_val else index
    values, index = caffe_top_k(x.reshape(len(x), -1), k, 1)
    y = np.stack([index, values] if out_max_val else [index], axis=1)
    return y.reshape(*y.shape, *(1,) * (x.ndim - 3))


def ties(n: int) -> dict[str, np.ndarray]:
    """Values from {-1, 0, 1, 2}: many equal maxima, so the tie order is exercised."""
    rng = np.random.default_rng(n)
    return {"data": rng.integers(-1, 3, (n, 5, 7, 9)).astype(np.float32)}


@pytest.mark.parametrize(
    ("params", "k", "out_max_val", "axis"),
    [
        ("", 1, False, None),
        ("top_k: 4", 4, False, None),
        ("out_max_val: true top_k: 3", 3, True, None),
        ("axis: 1", 1, False, 1),
        ("axis: 1 top_k: 2 out_max_val: true", 2, True, 1),
        ("axis: -1 top_k: 3", 3, False, 3),
        ("axis: 2 top_k: 7", 7, False, 2),
        ("axis: 0", 1, False, 0),
    ],
)
@pytest.mark.parametrize("feeds", [None, ties], ids=["distinct", "ties"])
def test_argmax(layer_check, params, k, out_max_val, axis, feeds):
    prototxt = net(
        f'layer {{ name: "am" type: "ArgMax" bottom: "data" top: "am" argmax_param {{ {params} }} }}'
    )

    def expected(inputs, w):
        return {"am": argmax_ref(inputs["data"].astype(np.float64), k, out_max_val, axis)}

    layer_check(prototxt, expected, feeds=feeds, opencv=False, tol=0)


def test_argmax_of_2d_bottom_has_3_axes(layer_check):
    prototxt = net(
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 8 } }\n'
        'layer { name: "am" type: "ArgMax" bottom: "fc" top: "am" argmax_param { out_max_val: true top_k: 2 } }'
    )

    def expected(inputs, w):
        fc = inputs["data"].reshape(len(inputs["data"]), -1).astype(np.float64) @ w["fc"][
            0
        ].T.astype(np.float64)
        return {"am": argmax_ref(fc + w["fc"][1], 2, True, None)}

    reports = layer_check(prototxt, expected, opencv=False)
    assert all(c.note == "" for c in reports[0].comparisons)


@pytest.mark.parametrize(
    ("params", "fn"),
    [
        ("", lambda x: x.sum()),
        ("operation: ASUM axis: 1", lambda x: np.abs(x).reshape(len(x), -1).sum(1)),
        (
            "operation: SUMSQ axis: 2 coeff: 0.5",
            lambda x: 0.5 * (x**2).reshape(*x.shape[:2], -1).sum(-1),
        ),
        ("operation: MEAN axis: -1 coeff: 2", lambda x: 2 * x.mean(-1)),
        ("operation: MEAN", lambda x: x.mean()),
        ("operation: SUM axis: 3 coeff: -1", lambda x: -x.sum(-1)),
    ],
)
def test_reduction(layer_check, params, fn):
    prototxt = net(
        f'layer {{ name: "r" type: "Reduction" bottom: "data" top: "r" reduction_param {{ {params} }} }}'
    )
    layer_check(prototxt, lambda i, w: {"r": fn(i["data"].astype(np.float64))}, opencv=False)
