"""Convolution and Deconvolution as Conv / ConvTranspose."""

from __future__ import annotations

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.geometry import conv_geometry
from ._base import OnnxContext, OnnxOut


def _check(node: Node) -> str | None:
    if node.param.convolution_param.axis != 1:
        return "convolution over an axis other than 1"
    return None


def _build(node: Node, ctx: OnnxContext, op_type: str) -> OnnxOut:
    require_weights(node)
    p = node.param.convolution_param
    geom = conv_geometry(p, len(ctx.in_shapes[0]) - 2)
    weight = ctx.tensor("weight", node.blobs[0])
    inits = [weight]
    inputs = [ctx.inputs[0], weight.name]
    if p.bias_term:
        bias = ctx.tensor("bias", node.blobs[1])
        inits.append(bias)
        inputs.append(bias.name)
    attrs = {
        "kernel_shape": list(geom.kernel),
        "strides": list(geom.stride),
        "pads": list(geom.pad) * 2,
        "dilations": list(geom.dilation),
        "group": int(p.group),
    }
    nodes = [ctx.op(op_type, inputs, [ctx.outputs[0]], **attrs)]
    for i in range(1, len(ctx.inputs)):  # several bottoms share the weights
        nodes.append(
            ctx.op(op_type, [ctx.inputs[i], *inputs[1:]], [ctx.outputs[i]], f"bottom{i}", **attrs)
        )
    return OnnxOut(nodes, inits)


@register("Convolution", "onnx", check=_check)
def _convolution(node: Node, ctx: OnnxContext) -> OnnxOut:
    return _build(node, ctx, "Conv")


@register("Deconvolution", "onnx", check=_check)
def _deconvolution(node: Node, ctx: OnnxContext) -> OnnxOut:
    return _build(node, ctx, "ConvTranspose")
