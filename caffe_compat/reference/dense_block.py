"""DenseBlock (senlinuc/caffe_ocr's DenseBlock_layer.cpp), inference: per transition BN with the
stored statistics, ReLU, [1x1 convolution, BN, ReLU,] a true 3x3 convolution (the kernel
flipped compared with Caffe's Convolution), pad 1, then the new channels appended
(shapes/dense_block.py has the blob order and the factor's two readings).

Backward, at the stored statistics: the appended channels' diff goes back through the
convolution (its weight diff one GEMM over im2col columns), the ReLU (the fork passes the diff
where the BN output is >= 0) and the BN's ``a`` (scaler / sqrt(var + eps)); the scaler and bias
get ``sum(g * xhat)`` and ``sum(g)``; the mean, variance and factor get no diff.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.dense_block import DENSE_BLOCK_EPS, dense_block_plan, stored_statistics, transitions
from ..shapes.geometry import ConvGeometry
from ._base import Arrays, BackwardContext, Grads, LayerContext
from .conv import _conv_data_diff, _weight_diff, convolve

GEOM3 = ConvGeometry(kernel=(3, 3), stride=(1, 1), pad=(1, 1), dilation=(1, 1))
GEOM1 = ConvGeometry(kernel=(1, 1), stride=(1, 1), pad=(0, 0), dilation=(1, 1))


def _bn(x: np.ndarray, bn: tuple[np.ndarray, ...], factor: np.ndarray) -> np.ndarray:
    """BN_inf_Fwd: ``scaler * (x - mean) / sqrt(var + eps) + bias`` per channel."""
    scaler, bias, mean, var = bn
    m, v = stored_statistics(mean, var, factor)
    c = (1, -1, 1, 1)
    inv = 1.0 / np.sqrt(v + DENSE_BLOCK_EPS)
    return scaler.reshape(c) * ((x - m.reshape(c)) * inv.reshape(c)) + bias.reshape(c)


def _flipped(weight: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1])


def _forward(node: Node, x: np.ndarray, blobs: tuple[np.ndarray, ...]):
    """The top, and each transition's intermediates for backward: (BN input, BN output, ReLU
    output), then with BC the same three for the bottleneck."""
    plan = dense_block_plan(node, x.shape[1])
    factor = blobs[-1]
    saved = []
    merged = x
    for step in transitions(plan, blobs):
        pre = _bn(merged, step.bn, factor)
        act = np.where(pre >= 0, pre, 0.0)
        record = [merged, pre, act]
        if step.filter1 is not None:
            conv = convolve(act, step.filter1, None, GEOM1, 1)
            pre = _bn(conv, step.bn_bc, factor)
            act = np.where(pre >= 0, pre, 0.0)
            record += [conv, pre, act]
        new = convolve(act, _flipped(step.filter3), None, GEOM3, 1)
        merged = np.concatenate([merged, new], axis=1)
        saved.append(record)
    return merged, saved


@register("DenseBlock", "reference")
def _dense_block(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    top, _ = _forward(node, inputs[0], ctx.blobs)
    return [top]


def _bn_backward(
    g: np.ndarray, x: np.ndarray, bn: tuple[np.ndarray, ...], factor: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diffs of the BN's bottom ``x``, scaler and bias from its top diff ``g`` (stored
    statistics)."""
    scaler, _, mean, var = bn
    m, v = stored_statistics(mean, var, factor)
    c = (1, -1, 1, 1)
    inv = (1.0 / np.sqrt(v + DENSE_BLOCK_EPS)).reshape(c)
    xhat = (x - m.reshape(c)) * inv
    sums = (0, 2, 3)
    shape = scaler.shape
    return (
        g * scaler.reshape(c) * inv,
        (g * xhat).sum(axis=sums).reshape(shape),
        g.sum(axis=sums).reshape(shape),
    )


def _conv_backward(
    x: np.ndarray, g: np.ndarray, weight: np.ndarray, geom: ConvGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """Bottom and weight diffs of ``convolve(x, weight)`` from its top diff ``g``."""
    w_diff = _weight_diff(x, g, geom, 1).reshape(weight.shape)
    return _conv_data_diff(g, weight, geom, 1, x.shape[2:]), w_diff


@register("DenseBlock", "reference_backward")
def _dense_block_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    (x,), (g,) = inputs, top_diffs
    plan = dense_block_plan(node, x.shape[1])
    blobs = ctx.blobs
    factor = blobs[-1]
    _, saved = _forward(node, x, blobs)
    steps = list(transitions(plan, blobs))
    t = plan.transitions
    grads: list[np.ndarray | None] = [None] * len(blobs)
    diff = g
    for i in reversed(range(t)):
        step, record = steps[i], saved[i]
        width = plan.width(i)
        diff, new_diff = diff[:, :width], diff[:, width:]
        d_act, w_diff = _conv_backward(record[-1], new_diff, _flipped(step.filter3), GEOM3)
        grads[i] = _flipped(w_diff)
        if step.filter1 is not None:
            conv, pre = record[3], record[4]
            d_pre = np.where(pre >= 0, d_act, 0.0)
            d_conv, grads[6 * t + i], grads[7 * t + i] = _bn_backward(
                d_pre, conv, step.bn_bc, factor
            )
            d_act, grads[5 * t + i] = _conv_backward(record[2], d_conv, step.filter1, GEOM1)
        merged, pre = record[0], record[1]
        d_pre = np.where(pre >= 0, d_act, 0.0)
        d_merged, grads[t + i], grads[2 * t + i] = _bn_backward(d_pre, merged, step.bn, factor)
        diff = diff + d_merged
    return [diff], grads
