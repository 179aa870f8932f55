"""LRN (lrn_layer.cpp), both regions.

ACROSS_CHANNELS: ``y = x * (k + alpha / n * sum(x^2 over n channels, zero-padded))^-beta``.
WITHIN_CHANNEL: Caffe chains its own layers: square, AVE pooling (kernel n, stride 1, pad
(n - 1) / 2, Caffe's divisor rule), Power(shift 1, scale alpha, power -beta), product. So it is
``y = x * (1 + alpha * avg(x^2))^-beta``: ``k`` plays no part there.

Backward: ACROSS_CHANNELS is Caffe's closed form, ``g * scale^-beta - 2 alpha beta / n * x *
sum(g * y / scale over the window)``; WITHIN_CHANNEL goes back through the same chain of layers.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import register
from ..shapes.geometry import pool_geometry
from ._base import Arrays, BackwardContext, Grads, LayerContext
from .pooling import ave_pool, ave_pool_backward

LRN = caffe_pb2.LRNParameter


def window_sum(v: np.ndarray, size: int) -> np.ndarray:
    """Sum over the ``size`` channels centred on each channel, zero past the ends."""
    pre = (size - 1) // 2
    padded = np.pad(v, [(0, 0), (pre, pre), (0, 0), (0, 0)])
    channels = v.shape[1]
    total = np.zeros_like(v)
    for offset in range(size):  # one channel offset at a time, over every pixel at once
        total += padded[:, offset : offset + channels]
    return total


def across_channels(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    return x * np.power(k + alpha / size * window_sum(np.square(x), size), -beta)


def _window(size: int, x: np.ndarray):
    param = caffe_pb2.PoolingParameter(pool=caffe_pb2.PoolingParameter.AVE, kernel_size=size)
    param.pad = (size - 1) // 2
    return pool_geometry(param, x.shape[2], x.shape[3])


def within_channel(x: np.ndarray, size: int, alpha: float, beta: float) -> np.ndarray:
    average = ave_pool(np.square(x), _window(size, x))
    return x * np.power(1.0 + alpha * average, -beta)


@register("LRN", "reference")
def _lrn(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.lrn_param
    size, alpha, beta = int(p.local_size), float(p.alpha), float(p.beta)
    if p.norm_region == LRN.WITHIN_CHANNEL:
        return [within_channel(x, size, alpha, beta)]
    return [across_channels(x, size, alpha, beta, float(p.k))]


@register("LRN", "reference_backward")
def _lrn_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    (x,), (g,) = inputs, top_diffs
    p = node.param.lrn_param
    size, alpha, beta = int(p.local_size), float(p.alpha), float(p.beta)
    if p.norm_region == LRN.WITHIN_CHANNEL:
        geom = _window(size, x)
        base = 1.0 + alpha * ave_pool(np.square(x), geom)
        factor = np.power(base, -beta)
        # Power's backward (diff_scale * y / base), then AVE pooling's, then the square's.
        through = ave_pool_backward(g * x * (-beta * alpha) * factor / base, geom, x.shape)
        return [g * factor + 2 * x * through], []
    scale = float(p.k) + alpha / size * window_sum(np.square(x), size)
    y = x * np.power(scale, -beta)
    ratio = window_sum(g * y / scale, size)
    return [g * np.power(scale, -beta) - (2 * alpha * beta / size) * x * ratio], []
