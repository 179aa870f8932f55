"""LRN (lrn_layer.cpp), both regions.

ACROSS_CHANNELS: ``y = x * (k + alpha / n * sum(x^2 over n channels, zero-padded))^-beta``.
WITHIN_CHANNEL: Caffe chains its own layers: square, AVE pooling (kernel n, stride 1, pad
(n - 1) / 2, Caffe's divisor rule), Power(shift 1, scale alpha, power -beta), product. So it is
``y = x * (1 + alpha * avg(x^2))^-beta``: ``k`` plays no part there.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import register
from ..shapes.geometry import pool_geometry
from ._base import LayerContext
from .pooling import ave_pool

Arrays = list[np.ndarray]
LRN = caffe_pb2.LRNParameter


def across_channels(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    pre = (size - 1) // 2
    padded = np.pad(np.square(x), [(0, 0), (pre, pre), (0, 0), (0, 0)])
    channels = x.shape[1]
    total = np.zeros_like(x)
    for offset in range(size):  # one channel offset at a time, over every pixel at once
        total += padded[:, offset : offset + channels]
    return x * np.power(k + alpha / size * total, -beta)


def within_channel(x: np.ndarray, size: int, alpha: float, beta: float) -> np.ndarray:
    param = caffe_pb2.PoolingParameter(pool=caffe_pb2.PoolingParameter.AVE, kernel_size=size)
    param.pad = (size - 1) // 2
    average = ave_pool(np.square(x), pool_geometry(param, x.shape[2], x.shape[3]))
    return x * np.power(1.0 + alpha * average, -beta)


@register("LRN", "reference")
def _lrn(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.lrn_param
    size, alpha, beta = int(p.local_size), float(p.alpha), float(p.beta)
    if p.norm_region == LRN.WITHIN_CHANNEL:
        return [within_channel(x, size, alpha, beta)]
    return [across_channels(x, size, alpha, beta, float(p.k))]
