"""BatchNorm and MVN as explicit ONNX arithmetic in Caffe's order (Sub, then Div by the std)."""

from __future__ import annotations

import numpy as np
from onnx import NodeProto, TensorProto

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.normalization import (
    SEGNET_BN_EPS,
    bn_stored,
    pspnet_bn,
    stored_statistics,
    uses_global_stats,
)
from ._base import OnnxContext, OnnxOut


def standardize(
    ctx: OnnxContext, x: str, y: str, axes: list[int], eps: float, std_eps: bool
) -> tuple[list[NodeProto], list[TensorProto]]:
    """``(x - mean) / std`` with the input's own biased statistics over ``axes``."""
    mean, centred, sq, var, root, denom = (
        ctx.name(s) for s in ("mean", "centred", "sq", "var", "root", "denom")
    )
    eps_t = ctx.tensor("eps", eps)
    nodes = [
        ctx.op("ReduceMean", [x], [mean], "mean", axes=axes, keepdims=1),
        ctx.op("Sub", [x, mean], [centred], "centre"),
        ctx.op("Mul", [centred, centred], [sq], "sq"),
        ctx.op("ReduceMean", [sq], [var], "var", axes=axes, keepdims=1),
    ]
    if std_eps:  # MVN divides by sqrt(var) + eps
        nodes += [
            ctx.op("Sqrt", [var], [root], "sqrt"),
            ctx.op("Add", [root, eps_t.name], [denom], "eps"),
        ]
    else:  # BatchNorm by sqrt(var + eps)
        nodes += [
            ctx.op("Add", [var, eps_t.name], [root], "eps"),
            ctx.op("Sqrt", [root], [denom], "sqrt"),
        ]
    nodes.append(ctx.op("Div", [centred, denom], [y]))
    return nodes, [eps_t]


@register("BatchNorm", "onnx")
def _batch_norm(node: Node, ctx: OnnxContext) -> OnnxOut:
    require_weights(node)
    ndim = len(ctx.in_shapes[0])
    x, y = ctx.inputs[0], ctx.outputs[0]
    eps = float(node.param.batch_norm_param.eps)
    if not uses_global_stats(node):
        axes = [i for i in range(ndim) if i != 1] if ndim > 1 else [0]
        return OnnxOut(*standardize(ctx, x, y, axes, eps, std_eps=False))
    mean, std = stored_statistics(node)
    shape = (-1,) + (1,) * (ndim - 2) if ndim > 1 else (-1,)
    mean_t, std_t = ctx.tensor("mean", mean.reshape(shape)), ctx.tensor("std", std.reshape(shape))
    centred = ctx.name("centred")
    nodes = [
        ctx.op("Sub", [x, mean_t.name], [centred], "centre"),
        ctx.op("Div", [centred, std_t.name], [y]),
    ]
    return OnnxOut(nodes, [mean_t, std_t])


@register("MVN", "onnx")
def _mvn(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.mvn_param
    x, y = ctx.inputs[0], ctx.outputs[0]
    nodes, inits = [], []
    out_shape = ctx.out_shapes[0]
    if len(ctx.in_shapes[0]) != 4:  # Caffe's 4-D view of a lower-rank bottom
        target = ctx.tensor("shape", [0, *out_shape[1:]], np.int64)
        x4 = ctx.name("as4d")
        nodes.append(ctx.op("Reshape", [x, target.name], [x4], "reshape"))
        inits.append(target)
        x = x4
    axes = [1, 2, 3] if p.across_channels else [2, 3]
    if p.normalize_variance:
        more, more_inits = standardize(ctx, x, y, axes, float(p.eps), std_eps=True)
        return OnnxOut(nodes + more, inits + more_inits)
    mean = ctx.name("mean")
    nodes += [
        ctx.op("ReduceMean", [x], [mean], "mean", axes=axes, keepdims=1),
        ctx.op("Sub", [x, mean], [y]),
    ]
    return OnnxOut(nodes, inits)


@register("BN", "onnx")
def _bn(node: Node, ctx: OnnxContext) -> OnnxOut:
    """The forks' BN in the fork's order: normalise (stored or batch statistics), then scale
    and shift; caffe-segnet's INFERENCE mode is the scale and shift alone."""
    require_weights(node)
    p = node.param.bn_param
    pspnet = pspnet_bn(p)
    x, y = ctx.inputs[0], ctx.outputs[0]
    scale = ctx.tensor("scale", np.asarray(node.blobs[0], np.float32).reshape(1, -1, 1, 1))
    shift = ctx.tensor("shift", np.asarray(node.blobs[1], np.float32).reshape(1, -1, 1, 1))
    inits = [scale, shift]
    nodes: list[NodeProto] = []
    if pspnet or not bn_stored(node):
        eps = float(np.float32(p.eps)) if pspnet else SEGNET_BN_EPS
        centred, var, root, inv, normed = (
            ctx.name(s) for s in ("centred", "var", "root", "inv", "normed")
        )
        eps_t, one = ctx.tensor("eps", eps), ctx.tensor("one", 1.0)
        inits += [eps_t, one]
        if pspnet and bn_stored(node):
            mean_t = ctx.tensor("mean", np.asarray(node.blobs[2], np.float32).reshape(1, -1, 1, 1))
            var_t = ctx.tensor("var", np.asarray(node.blobs[3], np.float32).reshape(1, -1, 1, 1))
            inits += [mean_t, var_t]
            nodes.append(ctx.op("Sub", [x, mean_t.name], [centred], "centre"))
            var = var_t.name
        else:
            mean, sq, sqmean, meansq = (ctx.name(s) for s in ("mean", "sq", "sqmean", "meansq"))
            axes = [0, 2, 3]
            nodes += [
                ctx.op("ReduceMean", [x], [mean], "mean", axes=axes, keepdims=1),
                ctx.op("Sub", [x, mean], [centred], "centre"),
            ]
            if pspnet:
                nodes += [
                    ctx.op("Mul", [centred, centred], [sq], "sq"),
                    ctx.op("ReduceMean", [sq], [var], "var", axes=axes, keepdims=1),
                ]
            else:  # caffe-segnet: E(x^2) - E(x)^2
                nodes += [
                    ctx.op("Mul", [x, x], [sq], "sq"),
                    ctx.op("ReduceMean", [sq], [sqmean], "sqmean", axes=axes, keepdims=1),
                    ctx.op("Mul", [mean, mean], [meansq], "meansq"),
                    ctx.op("Sub", [sqmean, meansq], [var], "var"),
                ]
        nodes += [
            ctx.op("Add", [var, eps_t.name], [root], "eps"),
            ctx.op("Sqrt", [root], [inv], "sqrt"),
            ctx.op("Div", [centred, inv], [normed], "normalise"),
        ]
        x = normed
    scaled = ctx.name("scaled")
    nodes += [
        ctx.op("Mul", [x, scale.name], [scaled], "scale"),
        ctx.op("Add", [scaled, shift.name], [y]),
    ]
    return OnnxOut(nodes, inits)
