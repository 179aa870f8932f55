"""Pooling geometry against a direct transcription of Caffe's PoolingLayer rules, and the torch
pooling module against a brute-force numpy pooling that follows Caffe's loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from caffe_compat.converters.torch.pooling import CaffePool2d
from caffe_compat.proto import caffe_pb2
from caffe_compat.shapes.geometry import pool_geometry

P = caffe_pb2.PoolingParameter


def caffe_out(size: int, k: int, s: int, p: int) -> int:
    out = math.ceil((size + 2 * p - k) / s) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


def caffe_pool(x: np.ndarray, k: int, s: int, p: int, ave: bool) -> np.ndarray:
    """Caffe's forward loops, written plainly (float64)."""
    n, c, h, w = x.shape
    oh, ow = caffe_out(h, k, s, p), caffe_out(w, k, s, p)
    y = np.zeros((n, c, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        hs, ws = i * s - p, j * s - p
        he, we = min(hs + k, h + p), min(ws + k, w + p)
        size = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
        window = x[:, :, hs:he, ws:we]
        if ave:
            y[:, :, i, j] = window.sum(axis=(2, 3)) / size
        else:
            y[:, :, i, j] = window.max(axis=(2, 3))
    return y


def param(k: int, s: int, p: int, ave: bool) -> caffe_pb2.PoolingParameter:
    return P(pool=P.AVE if ave else P.MAX, kernel_size=k, stride=s, pad=p)


def test_output_sizes_and_divisors_over_a_grid():
    for size, k, s in itertools.product(range(1, 16), range(1, 6), range(1, 5)):
        for p in range(k):
            if size + 2 * p < k:
                continue
            geom = pool_geometry(param(k, s, p, True), size, size + 1)
            assert geom.out[0] == caffe_out(size, k, s, p)
            assert geom.out[1] == caffe_out(size + 1, k, s, p)
            for o, d in enumerate(geom.axes[0].divisors()):
                hs = o * s - p
                assert d == min(hs + k, size + p) - hs


@pytest.mark.parametrize("ave", [False, True])
@pytest.mark.parametrize(
    "k,s,p", [(3, 2, 0), (3, 2, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2), (1, 2, 0)]
)
def test_torch_pooling_equals_caffe_loops(ave, k, s, p):
    x = np.random.default_rng(k * 10 + s + p).standard_normal((2, 3, 9, 11))
    want = caffe_pool(x, k, s, p, ave)
    got = CaffePool2d(param(k, s, p, ave))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
