"""BatchNorm (batch_norm_layer.cpp) and MVN (mvn_layer.cpp).

BatchNorm's blobs hold mean and variance times a factor (blob 2; 0 means the statistics are 0).
Stored statistics are used when ``use_global_stats`` says so, or when it is unset in the TEST
phase; otherwise the batch's own biased statistics over (N, spatial). eps goes under the root.
MVN adds its eps to the standard deviation, not the variance, and writes Caffe's 4-D view.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.normalization import batch_norm_channels, legacy_4d, uses_global_stats
from ._base import LayerContext

Arrays = list[np.ndarray]


@register("BatchNorm", "reference")
def _batch_norm(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    channels = batch_norm_channels(x.shape)
    view = x.reshape(x.shape[0], channels, -1)
    eps = float(node.param.batch_norm_param.eps)
    if uses_global_stats(node):
        factor = ctx.blobs[2].reshape(-1)[0]
        scale = 0.0 if factor == 0 else 1.0 / factor
        mean, var = ctx.blobs[0] * scale, ctx.blobs[1] * scale
    else:
        mean = view.mean(axis=(0, 2))
        var = np.square(view - mean[None, :, None]).mean(axis=(0, 2))
    y = (view - mean[None, :, None]) / np.sqrt(var + eps)[None, :, None]
    return [y.reshape(x.shape)]


@register("MVN", "reference")
def _mvn(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.mvn_param
    shape = legacy_4d(x.shape)
    groups = shape[0] if p.across_channels else shape[0] * shape[1]
    view = x.reshape(groups, -1)
    centred = view - view.mean(axis=1, keepdims=True)
    if p.normalize_variance:
        std = np.sqrt(np.square(centred).mean(axis=1, keepdims=True))
        centred = centred / (std + float(p.eps))
    return [centred.reshape(shape)]
