"""The one-bottom pointwise layers with Caffe's formulas: ReLU, Dropout (inference), Power, Exp,
Log, AbsVal, Sigmoid, TanH, ELU, BNLL, Threshold, Clip, Swish and PReLU. Constants are rounded to
float32 the way Caffe computes them (shapes/activations.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.activations import (
    dropout_scales,
    exp_constants,
    log_base_scale,
    power_constant,
    samples_at_test,
)
from ._base import TorchContext, parameter


@register("ReLU", "torch")
def _relu(node: Node, ctx: TorchContext) -> nn.Module:
    slope = float(node.param.relu_param.negative_slope)
    return nn.LeakyReLU(slope) if slope else nn.ReLU()


class CaffeDropout(nn.Module):
    """Dropout in a TRAIN-phase net built for training: a fresh mask per forward, kept ones
    scaled by Caffe's float ``1 / (1 - ratio)``; the last mask stays in ``mask`` (the float64
    reference takes it as an input when judging a training pass)."""

    def __init__(self, ratio: float, scale: float | None = None) -> None:
        super().__init__()
        self.ratio = float(np.float32(ratio))
        default = float(np.float32(1.0 / (1.0 - self.ratio)))
        self.scale = default if scale is None else scale  # caffe-fast-rcnn's scale_train: 1
        self.mask: torch.Tensor | None = None
        self.generator: torch.Generator | None = None  # the owner's, for reproducible masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        draw = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        self.mask = (draw >= self.ratio).to(x.dtype)
        return x * (self.mask * self.scale)


class MonteCarloDropout(CaffeDropout):
    """caffe-segnet's Dropout with ``sample_weights_test``: a fresh mask on every forward, in
    eval mode too (Bayesian SegNet averages several such runs). ``sample = False`` gives the
    expected value, the identity (the mean network), which verify compares."""

    def __init__(self, ratio: float) -> None:
        super().__init__(ratio)
        self.sample = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sample:
            return x
        if self.generator is not None:
            return super().forward(x)
        # rand_like, not rand(x.shape): torch.export keeps the batch axis symbolic through it.
        keep = (torch.rand_like(x) >= self.ratio).to(x.dtype)
        return x * (keep * self.scale)


def at_expected_value(model: nn.Module) -> nn.Module:
    """``model`` with its Monte Carlo dropout layers at their expected value (the identity), for
    runs that must be reproducible: synth's calibration from a seed."""
    for module in model.modules():
        if isinstance(module, MonteCarloDropout):
            module.sample = False
    return model


@register("Dropout", "torch")
def _dropout(node: Node, ctx: TorchContext) -> nn.Module:
    train, test = dropout_scales(node)
    if ctx.graph.training and node.param.phase == caffe_pb2.TRAIN:
        return CaffeDropout(node.param.dropout_param.dropout_ratio, train)
    if samples_at_test(node):
        return MonteCarloDropout(node.param.dropout_param.dropout_ratio)
    if test != 1.0:  # caffe-fast-rcnn's scale_train: false scales at test
        return Pointwise(_times, test)
    # Caffe scales by 1/(1-ratio) while training, so inference is the identity.
    return nn.Identity()


def _times(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x * factor


class Pointwise(nn.Module):
    """``fn(x, *constants)`` for a module-level ``fn`` (so the module pickles and exports)."""

    def __init__(self, fn: Callable[..., torch.Tensor], *constants: float) -> None:
        super().__init__()
        self.fn, self.constants = fn, constants

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *self.constants)


def _power(x: torch.Tensor, power: float, scale: float, shift: float) -> torch.Tensor:
    if power * scale == 0:  # Caffe ignores the input
        return torch.full_like(x, power_constant(power, shift))
    y = x * scale if scale != 1 else x
    y = y + shift if shift != 0 else y
    return y.pow(power) if power != 1 else y


def _exp(x: torch.Tensor, inner: float, outer: float) -> torch.Tensor:
    y = torch.exp(x * inner if inner != 1 else x)
    return y * outer if outer != 1 else y


def _log(x: torch.Tensor, scale: float, shift: float, base_scale: float) -> torch.Tensor:
    y = torch.log(x * scale + shift if (scale, shift) != (1, 0) else x)
    return y * base_scale if base_scale != 1 else y


def _threshold(x: torch.Tensor, t: float) -> torch.Tensor:
    return (x > t).to(x.dtype)


def _clip(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return torch.clamp(torch.clamp(x, max=high), min=low)  # Caffe: max(low, min(x, high))


def _swish(x: torch.Tensor, beta: float) -> torch.Tensor:
    return x * torch.sigmoid(x * beta)


@register("Power", "torch")
def _power_layer(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.power_param
    return Pointwise(_power, float(p.power), float(p.scale), float(p.shift))


@register("Exp", "torch")
def _exp_layer(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.exp_param
    return Pointwise(_exp, *exp_constants(p.base, p.scale, p.shift))


@register("Log", "torch")
def _log_layer(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.log_param
    return Pointwise(_log, float(p.scale), float(p.shift), log_base_scale(p.base))


_SIMPLE: dict[str, Callable[[Node], nn.Module]] = {
    "AbsVal": lambda n: Pointwise(torch.abs),
    "Sigmoid": lambda n: nn.Sigmoid(),
    "TanH": lambda n: nn.Tanh(),
    "ELU": lambda n: nn.ELU(float(n.param.elu_param.alpha)),
    "BNLL": lambda n: nn.Softplus(),  # log(1 + e^x), stable on both sides as Caffe's
    "Threshold": lambda n: Pointwise(_threshold, float(n.param.threshold_param.threshold)),
    "Clip": lambda n: Pointwise(
        _clip, float(n.param.clip_param.min), float(n.param.clip_param.max)
    ),
    "Swish": lambda n: Pointwise(_swish, float(n.param.swish_param.beta)),
    "ReLU6": lambda n: nn.ReLU6(),
    "Mish": lambda n: nn.Mish(),
}


@register(tuple(_SIMPLE), "torch")
def _simple(node: Node, ctx: TorchContext) -> nn.Module:
    return _SIMPLE[node.type](node)


class PReLU(nn.Module):
    blob_slots = ("slopes",)

    def __init__(self, slopes: np.ndarray) -> None:
        super().__init__()
        self.slopes = parameter(slopes)  # (C,), or a 0-axis blob when channel_shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.slopes.reshape(-1))


@register("PReLU", "torch")
def _prelu(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    return PReLU(node.blobs[0])
