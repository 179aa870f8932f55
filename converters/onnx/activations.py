"""The one-bottom pointwise layers with Caffe's formulas: ReLU, Dropout (inference), Power, Exp,
Log, AbsVal, Sigmoid, TanH, ELU, BNLL, Threshold, Clip, Swish and PReLU. Constants are rounded to
float32 the way Caffe computes them (shapes/activations.py)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, numpy_helper

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.activations import (
    SAMPLING_SWITCH,
    dropout_scales,
    exp_constants,
    log_base_scale,
    power_constant,
    samples_at_test,
)
from ._base import OnnxContext, OnnxOut


@register("ReLU", "onnx")
def _relu(node: Node, ctx: OnnxContext) -> OnnxOut:
    slope = float(node.param.relu_param.negative_slope)
    if slope:
        return OnnxOut([ctx.op("LeakyRelu", ctx.inputs, ctx.outputs, alpha=slope)])
    return OnnxOut([ctx.op("Relu", ctx.inputs, ctx.outputs)])


@register("Dropout", "onnx")
def _dropout(node: Node, ctx: OnnxContext) -> OnnxOut:
    """Inference: the identity. caffe-segnet's Monte Carlo dropout: ONNX Dropout with
    ``training_mode`` (opset 12 on; every opset written is 13 or later) read from the model's
    bool input ``SAMPLING_SWITCH``, whose initializer (true) samples unless a run feeds false;
    ONNX scales the kept values by 1 / (1 - ratio), as Caffe does. caffe-fast-rcnn's
    ``scale_train: false``: a Mul by its test factor."""
    if not samples_at_test(node):
        _, test = dropout_scales(node)
        chain = _Chain(ctx)
        return (chain.step("Mul", chain.const("scale", test)) if test != 1.0 else chain).done()
    ratio = float(np.float32(node.param.dropout_param.dropout_ratio))
    inits = [
        ctx.tensor("ratio", ratio),
        numpy_helper.from_array(np.array(True), SAMPLING_SWITCH),
    ]
    inputs = [ctx.inputs[0], inits[0].name, SAMPLING_SWITCH]
    return OnnxOut([ctx.op("Dropout", inputs, ctx.outputs)], inits)


class _Chain:
    """Build ``x -> op -> op ...`` one step at a time; the last step writes the layer's top."""

    def __init__(self, ctx: OnnxContext) -> None:
        self.ctx, self.value, self.nodes, self.inits = ctx, ctx.inputs[0], [], []

    def const(self, name: str, value: float) -> str:
        self.inits.append(self.ctx.tensor(name, value))
        return self.inits[-1].name

    def step(self, op: str, *others: str, **attrs) -> _Chain:
        suffix = f"{op.lower()}{len(self.nodes)}"
        out = self.ctx.name(suffix)
        self.nodes.append(self.ctx.op(op, [self.value, *others], [out], suffix, **attrs))
        self.value = out
        return self

    def done(self) -> OnnxOut:
        if not self.nodes:
            self.nodes.append(self.ctx.op("Identity", [self.value], [self.ctx.outputs[0]]))
        else:  # rename the last step's output to the top
            self.nodes[-1].output[0] = self.ctx.outputs[0]
            self.nodes[-1].name = self.ctx.node.name
        return OnnxOut(self.nodes, self.inits)


def _scale_shift(c: _Chain, scale: float, shift: float) -> _Chain:
    if scale != 1:
        c.step("Mul", c.const("scale", scale))
    if shift != 0:
        c.step("Add", c.const("shift", shift))
    return c


@register("Power", "onnx")
def _power(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.power_param
    c = _Chain(ctx)
    if p.power * p.scale == 0:  # Caffe ignores the input
        value = ctx.tensor("value", [power_constant(p.power, p.shift)])
        return c.step("Shape").step("ConstantOfShape", value=value).done()
    _scale_shift(c, p.scale, p.shift)
    return (c.step("Pow", c.const("power", p.power)) if p.power != 1 else c).done()


@register("Exp", "onnx")
def _exp(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.exp_param
    inner, outer = exp_constants(p.base, p.scale, p.shift)
    c = _scale_shift(_Chain(ctx), inner, 0).step("Exp")
    return (c.step("Mul", c.const("outer", outer)) if outer != 1 else c).done()


@register("Log", "onnx")
def _log(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.log_param
    c = _scale_shift(_Chain(ctx), p.scale, p.shift).step("Log")
    base_scale = log_base_scale(p.base)
    return (c.step("Mul", c.const("base_scale", base_scale)) if base_scale != 1 else c).done()


@register("Threshold", "onnx")
def _threshold(node: Node, ctx: OnnxContext) -> OnnxOut:
    c = _Chain(ctx)
    c.step("Greater", c.const("threshold", node.param.threshold_param.threshold))
    return c.step("Cast", to=TensorProto.FLOAT).done()


@register("Clip", "onnx")
def _clip(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.clip_param
    c = _Chain(ctx)
    return c.step("Min", c.const("max", p.max)).step("Max", c.const("min", p.min)).done()


@register("Swish", "onnx")
def _swish(node: Node, ctx: OnnxContext) -> OnnxOut:
    x, c = ctx.inputs[0], _Chain(ctx)
    _scale_shift(c, node.param.swish_param.beta, 0).step("Sigmoid")
    return c.step("Mul", x).done()


@register("ReLU6", "onnx")
def _relu6(node: Node, ctx: OnnxContext) -> OnnxOut:
    c = _Chain(ctx)
    return c.step("Max", c.const("low", 0.0)).step("Min", c.const("high", 6.0)).done()


@register("Mish", "onnx")
def _mish(node: Node, ctx: OnnxContext) -> OnnxOut:
    """Opset 17 has no Mish (it came in 18): x * tanh(softplus(x))."""
    x, c = ctx.inputs[0], _Chain(ctx)
    return c.step("Softplus").step("Tanh").step("Mul", x).done()


_SIMPLE = {"AbsVal": "Abs", "Sigmoid": "Sigmoid", "TanH": "Tanh", "BNLL": "Softplus"}


@register(tuple(_SIMPLE), "onnx")
def _simple(node: Node, ctx: OnnxContext) -> OnnxOut:
    return OnnxOut([ctx.op(_SIMPLE[node.type], ctx.inputs, ctx.outputs)])


@register("ELU", "onnx")
def _elu(node: Node, ctx: OnnxContext) -> OnnxOut:
    return OnnxOut(
        [ctx.op("Elu", ctx.inputs, ctx.outputs, alpha=float(node.param.elu_param.alpha))]
    )


@register("PReLU", "onnx")
def _prelu(node: Node, ctx: OnnxContext) -> OnnxOut:
    require_weights(node)
    shared = node.param.prelu_param.channel_shared
    trailing = (1,) * (len(ctx.in_shapes[0]) - 2)  # slopes run along axis 1
    slope = ctx.tensor(
        "slope", node.blobs[0].reshape(1) if shared else node.blobs[0].reshape(-1, *trailing)
    )
    return OnnxOut([ctx.op("PRelu", [ctx.inputs[0], slope.name], ctx.outputs)], [slope])
