"""Elementwise layers, each Caffe's CPU formula in float64 (relu_layer.cpp, prelu_layer.cpp, ...).

Where Caffe's formula and the textbook one differ at the edges (BNLL's two branches, ELU written
with min/max, Clip's comparison order), Caffe's form is kept.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import register
from ._base import LayerContext

Arrays = list[np.ndarray]


@register("ReLU", "reference")
def _relu(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    slope = float(node.param.relu_param.negative_slope)
    return [np.maximum(x, 0) + slope * np.minimum(x, 0)]


@register("PReLU", "reference")
def _prelu(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    slopes = ctx.blobs[0]
    if slopes.ndim:  # one slope per channel (axis 1); channel_shared keeps a 0-axis blob
        slopes = slopes.reshape((1, -1) + (1,) * (x.ndim - 2))
    return [np.maximum(x, 0) + slopes * np.minimum(x, 0)]


@register("ELU", "reference")
def _elu(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    alpha = float(node.param.elu_param.alpha)
    return [np.maximum(x, 0) + alpha * (np.exp(np.minimum(x, 0)) - 1)]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), from exp(-|x|) so it neither overflows nor cancels (Caffe's
    0.5 tanh(x / 2) + 0.5 is the same function but loses the tail to cancellation)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@register("Sigmoid", "reference")
def _sigmoid(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return [sigmoid(inputs[0])]


@register("TanH", "reference")
def _tanh(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return [np.tanh(inputs[0])]


@register("AbsVal", "reference")
def _absval(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return [np.abs(inputs[0])]


@register("BNLL", "reference")
def _bnll(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    # x > 0 ? x + log(1 + exp(-x)) : log(1 + exp(x)), both branches as one expression
    return [np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))]


@register("Power", "reference")
def _power(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.power_param
    power, scale, shift = float(p.power), float(p.scale), float(p.shift)
    if power * scale == 0:  # Caffe ignores the input: 1 for power 0, else shift ** power
        return [np.full(x.shape, 1.0 if power == 0 else shift**power)]
    return [np.power(scale * x + shift, power)]


def _log_base(base: float) -> float:
    return 1.0 if base == -1 else float(np.log(base))  # base -1 means e


@register("Exp", "reference")
def _exp(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.exp_param
    base, scale, shift = float(p.base), float(p.scale), float(p.shift)
    log_base = _log_base(base)
    return [np.exp(log_base * scale * x) * np.exp(log_base * shift)]  # base ** (shift + scale x)


@register("Log", "reference")
def _log(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.log_param
    return [np.log(float(p.scale) * x + float(p.shift)) / _log_base(float(p.base))]


@register("Threshold", "reference")
def _threshold(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    return [(x > float(node.param.threshold_param.threshold)).astype(np.float64)]


@register("Clip", "reference")
def _clip(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    p = node.param.clip_param
    low, high = float(p.min), float(p.max)
    upper = np.where(high < x, high, x)  # std::min(x, max)
    return [np.where(low < upper, upper, low)]  # std::max(min, .)


@register("Swish", "reference")
def _swish(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    beta = float(node.param.swish_param.beta)
    return [x * sigmoid(beta * x)]


def _dropout_check(node: Node) -> str | None:
    """Dropout in the TRAIN phase drops values at random"""
    if node.param.HasField("phase") and node.param.phase == caffe_pb2.TRAIN:
        return "Dropout in the TRAIN phase drops values at random; load the net for TEST"
    return None


@register("Dropout", "reference", check=_dropout_check)
def _dropout(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return [inputs[0]]  # TEST phase: Caffe copies the bottom (the scaling happens in training)
