"""LRN: ONNX's LRN across channels (bias = Caffe's k); within a channel as pooled squares."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ...proto import caffe_pb2
from ...registry import register
from ._base import OnnxContext, OnnxOut

ACROSS = caffe_pb2.LRNParameter.ACROSS_CHANNELS


@register("LRN", "onnx")
def _lrn(node: Node, ctx: OnnxContext) -> OnnxOut:
    p = node.param.lrn_param
    x, y = ctx.inputs[0], ctx.outputs[0]
    size, alpha, beta = int(p.local_size), float(p.alpha), float(p.beta)
    if p.norm_region == ACROSS and alpha > 0 and beta > 0:
        return OnnxOut(
            [ctx.op("LRN", [x], [y], size=size, alpha=alpha, beta=beta, bias=float(p.k))]
        )
    pad = (size - 1) // 2
    if p.norm_region == ACROSS:
        return _across_explicit(ctx, x, y, size, alpha, beta, float(p.k))
    alpha_t, one_t, beta_t = (
        ctx.tensor("alpha", alpha),
        ctx.tensor("one", 1.0),
        ctx.tensor("neg_beta", -beta),
    )
    sq, mean, scaled, base, power = (ctx.name(s) for s in ("sq", "mean", "scaled", "base", "pow"))
    nodes = [
        ctx.op("Mul", [x, x], [sq], "sq"),
        ctx.op(
            "AveragePool",
            [sq],
            [mean],
            "mean",
            kernel_shape=[size, size],
            strides=[1, 1],
            pads=[pad] * 4,
            count_include_pad=1,
        ),
        ctx.op("Mul", [mean, alpha_t.name], [scaled], "scaled"),
        ctx.op("Add", [scaled, one_t.name], [base], "base"),
        ctx.op("Pow", [base, beta_t.name], [power], "pow"),
        ctx.op("Mul", [x, power], [y]),
    ]
    return OnnxOut(nodes, [alpha_t, one_t, beta_t])


def _across_explicit(
    ctx: OnnxContext, x: str, y: str, size: int, alpha: float, beta: float, k: float
) -> OnnxOut:
    """Across channels without ONNX's LRN, which ONNX Runtime refuses for alpha <= 0 or
    beta <= 0 (valid in Caffe): the squares' mean over a window of ``size`` channels (zero
    padded as Caffe pads), ``x * (k + alpha * mean) ** -beta``."""
    pad = (size - 1) // 2
    axis, alpha_t, k_t, beta_t = (
        ctx.tensor("axis", [1], np.int64),
        ctx.tensor("alpha", alpha),
        ctx.tensor("k", k),
        ctx.tensor("neg_beta", -beta),
    )
    names = ("sq", "sq5", "mean5", "mean", "scaled", "base", "pow")
    sq, sq5, mean5, mean, scaled, base, power = (ctx.name(s) for s in names)
    nodes = [
        ctx.op("Mul", [x, x], [sq], "sq"),
        ctx.op("Unsqueeze", [sq, axis.name], [sq5], "sq5"),  # N x 1 x C x H x W
        ctx.op(
            "AveragePool",
            [sq5],
            [mean5],
            "mean",
            kernel_shape=[size, 1, 1],
            strides=[1, 1, 1],
            pads=[pad, 0, 0, pad, 0, 0],
            count_include_pad=1,
        ),
        ctx.op("Squeeze", [mean5, axis.name], [mean], "squeeze"),
        ctx.op("Mul", [mean, alpha_t.name], [scaled], "scaled"),
        ctx.op("Add", [scaled, k_t.name], [base], "base"),
        ctx.op("Pow", [base, beta_t.name], [power], "pow"),
        ctx.op("Mul", [x, power], [y]),
    ]
    return OnnxOut(nodes, [axis, alpha_t, k_t, beta_t])
