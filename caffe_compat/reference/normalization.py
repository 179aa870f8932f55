"""BatchNorm (batch_norm_layer.cpp) and MVN (mvn_layer.cpp).

BatchNorm's blobs hold mean and variance times a factor (blob 2; 0 means the statistics are 0).
Stored statistics are used when ``use_global_stats`` says so, or when it is unset in the TEST
phase; otherwise the batch's own biased statistics over (N, spatial). eps goes under the root.
MVN adds its eps to the standard deviation, not the variance, and writes Caffe's 4-D view.

A TRAIN forward on batch statistics leaves the updated blobs in its ``state``: Caffe's running
sums, ``f' = maf * f + 1``, ``mean' = batch mean + maf * mean`` and ``var' = m / (m - 1) * batch
variance + maf * var`` (m values per channel). Backward is Caffe's: with batch statistics
``(g - mean(g) - mean(g * y) * y) / sqrt(var + eps)``, with stored ones ``g / sqrt(var + eps)``;
MVN's uses ``std + eps`` where the derivative has ``std`` in one term (mvn_layer.cpp).

BN, the forks' layer (docs/forks.md). caffe-segnet's bn_layer.cpp: INFERENCE is ``scale * x +
shift``; LEARN normalises with the batch's ``E(x^2) - E(x)^2`` over (N, H, W) and eps 1e-9 under
the root. yjxiong's (PSPNet's) bn_layer.cpp: in TEST or frozen ``slope * (x - mean) *
(var + eps)^-1/2 + bias`` with the stored mean and variance, else the batch's biased statistics.
Backward is transcribed for the stored forms (the diffs of x, scale/slope and shift/bias).
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.normalization import (
    SEGNET_BN_EPS,
    batch_norm_channels,
    bn_stored,
    legacy_4d,
    pspnet_bn,
    uses_global_stats,
)
from ._base import Arrays, BackwardContext, Grads, LayerContext


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
        if ctx.blobs:
            ctx.state["blobs"] = running_sums(node, ctx.blobs, mean, var, x.size // channels)
    y = (view - mean[None, :, None]) / np.sqrt(var + eps)[None, :, None]
    return [y.reshape(x.shape)]


def running_sums(
    node: Node, blobs: tuple[np.ndarray, ...], mean: np.ndarray, var: np.ndarray, m: int
) -> list[np.ndarray]:
    """BatchNorm's three blobs after one TRAIN forward (Caffe's moving-average sums)."""
    fraction = float(np.float32(node.param.batch_norm_param.moving_average_fraction))
    correction = m / (m - 1) if m > 1 else 1.0
    return [
        mean.reshape(blobs[0].shape) + fraction * blobs[0],
        correction * var.reshape(blobs[1].shape) + fraction * blobs[1],
        blobs[2] * fraction + 1,
    ]


@register("BatchNorm", "reference_backward")
def _batch_norm_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    (x,), (g,) = inputs, top_diffs
    channels = batch_norm_channels(x.shape)
    view, diff = x.reshape(x.shape[0], channels, -1), g.reshape(x.shape[0], channels, -1)
    eps = float(node.param.batch_norm_param.eps)
    if uses_global_stats(node):
        factor = ctx.blobs[2].reshape(-1)[0]
        var = ctx.blobs[1] * (0.0 if factor == 0 else 1.0 / factor)
        return [(diff / np.sqrt(var + eps)[None, :, None]).reshape(x.shape)], [None] * 3
    mean = view.mean(axis=(0, 2), keepdims=True)
    std = np.sqrt(np.square(view - mean).mean(axis=(0, 2), keepdims=True) + eps)
    y = (view - mean) / std
    bottom = (
        diff
        - diff.mean(axis=(0, 2), keepdims=True)
        - (diff * y).mean(axis=(0, 2), keepdims=True) * y
    ) / std
    return [bottom.reshape(x.shape)], [None] * len(ctx.blobs)


@register("MVN", "reference_backward")
def _mvn_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    (x,), (g,) = inputs, top_diffs
    p = node.param.mvn_param
    shape = legacy_4d(x.shape)
    groups = shape[0] if p.across_channels else shape[0] * shape[1]
    view, diff = x.reshape(groups, -1), g.reshape(groups, -1)
    dim = view.shape[1]
    if not p.normalize_variance:
        return [(diff - diff.mean(axis=1, keepdims=True)).reshape(x.shape)], []
    centred = view - view.mean(axis=1, keepdims=True)
    std = np.sqrt(np.square(centred).mean(axis=1, keepdims=True)) + float(p.eps)
    y = centred / std
    total = diff.sum(axis=1, keepdims=True) + y * (diff * y).sum(axis=1, keepdims=True)
    return [((diff - total / dim) / std).reshape(x.shape)], []


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


def _per_channel(blob: np.ndarray) -> np.ndarray:
    return np.asarray(blob, np.float64).reshape(1, -1, 1, 1)


def _bn_statistics(node: Node, x: np.ndarray, ctx: LayerContext) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 1 / sqrt(var + eps) per channel, shaped (1, C, 1, 1)."""
    p = node.param.bn_param
    if pspnet_bn(p):
        eps = float(np.float32(p.eps))
        if bn_stored(node):
            mean, var = _per_channel(ctx.blobs[2]), _per_channel(ctx.blobs[3])
        else:
            mean = x.mean(axis=(0, 2, 3), keepdims=True)
            var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        return mean, (var + eps) ** -0.5
    mean = x.mean(axis=(0, 2, 3), keepdims=True)  # caffe-segnet LEARN: var = E(x^2) - E(x)^2
    var = (x * x).mean(axis=(0, 2, 3), keepdims=True) - mean * mean
    return mean, 1 / np.sqrt(var + SEGNET_BN_EPS)


@register("BN", "reference")
def _bn(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    scale, shift = _per_channel(ctx.blobs[0]), _per_channel(ctx.blobs[1])
    if not pspnet_bn(node.param.bn_param) and bn_stored(node):
        return [x * scale + shift]  # caffe-segnet INFERENCE
    mean, inv_std = _bn_statistics(node, x, ctx)
    return [(x - mean) * inv_std * scale + shift]


@register("BN", "reference_backward")
def _bn_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    (x,), (g,) = inputs, top_diffs
    if not bn_stored(node):
        raise ValueError("BN's backward with batch statistics is not transcribed here")
    scale = _per_channel(ctx.blobs[0])
    sums = (0, 2, 3)
    if pspnet_bn(node.param.bn_param):
        mean, inv_std = _bn_statistics(node, x, ctx)
        normed = (x - mean) * inv_std
        blob = ctx.blobs[0].shape
        grads = [(g * normed).sum(axis=sums).reshape(blob), g.sum(axis=sums).reshape(blob)]
        return [g * scale * inv_std], [*grads, None, None]
    blob = ctx.blobs[0].shape
    return [g * scale], [(g * x).sum(axis=sums).reshape(blob), g.sum(axis=sums).reshape(blob)]
