"""Scale, Bias (learned operand or ``bottom[1]``) and Eltwise (SUM with coefficients, PROD, MAX)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.elementwise import operand_axis
from ._base import TorchContext, parameter

Op = caffe_pb2.EltwiseParameter


class Affine(nn.Module):
    """``x * scale + bias``; each operand covers axes ``[axis, axis + k)`` of ``x`` and is a
    learned blob, the second bottom (``from_bottom`` names which), or absent."""

    def __init__(
        self,
        trailing: int,
        scale: np.ndarray | None = None,
        bias: np.ndarray | None = None,
        from_bottom: str | None = None,
    ) -> None:
        super().__init__()
        self.trailing = (1,) * trailing  # axes of x after the operand's, for broadcasting
        self.register_parameter("scale", None if scale is None else parameter(scale))
        self.register_parameter("bias", None if bias is None else parameter(bias))
        self.from_bottom = from_bottom
        self.blob_slots = tuple(
            name
            for name, blob in (("scale", scale), ("bias", bias))
            if blob is not None and name != from_bottom
        )

    def _fit(self, operand: torch.Tensor) -> torch.Tensor:
        return operand.reshape(*operand.shape, *self.trailing)

    def forward(self, x: torch.Tensor, *other: torch.Tensor) -> torch.Tensor:
        scale = other[0] if self.from_bottom == "scale" else self.scale
        bias = other[0] if self.from_bottom == "bias" else self.bias
        y = x if scale is None else x * self._fit(scale)
        return y if bias is None else y + self._fit(bias)


def _affine(node: Node, ctx: TorchContext, kind: str, axis: int, extra_bias: bool) -> Affine:
    shapes = ctx.in_shapes
    if len(shapes) == 1 or extra_bias:
        require_weights(node)
    blobs = list(node.blobs)
    operand = shapes[1] if len(shapes) > 1 else tuple(blobs[0].shape)
    trailing = len(shapes[0]) - operand_axis(shapes[0], operand, axis) - len(operand)
    own = {kind: blobs.pop(0)} if len(shapes) == 1 else {}
    if extra_bias:
        own["bias"] = blobs.pop(0)
    return Affine(trailing, **own, from_bottom=kind if len(shapes) > 1 else None)


@register("Scale", "torch")
def _scale(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.scale_param
    return _affine(node, ctx, "scale", int(p.axis), bool(p.bias_term))


@register("Bias", "torch")
def _bias(node: Node, ctx: TorchContext) -> nn.Module:
    return _affine(node, ctx, "bias", int(node.param.bias_param.axis), False)


class Eltwise(nn.Module):
    def __init__(self, operation: int, coeffs: list[float]) -> None:
        super().__init__()
        self.operation, self.coeffs = operation, coeffs

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == Op.PROD:
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y = y * x
            return y
        if self.operation == Op.MAX:
            # Caffe's comparisons, so each diff goes back to the bottom Caffe picked: bottom 0
            # only when strictly greater than bottom 1, a later one only when strictly greater.
            y = torch.where(xs[0] > xs[1], xs[0], xs[1])
            for x in xs[2:]:
                y = torch.where(x > y, x, y)
            return y
        terms = [x if c == 1 else x * c for x, c in zip(xs, self.coeffs)]
        y = terms[0]
        for t in terms[1:]:
            y = y + t
        return y


@register("Eltwise", "torch")
def _eltwise(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.eltwise_param
    coeffs = [float(c) for c in p.coeff] or [1.0] * len(node.inputs)
    return Eltwise(int(p.operation), coeffs)


class Axpy(nn.Module):
    """SENet's Axpy: ``a * x + y`` with ``a`` per (item, channel)."""

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return a.reshape(*a.shape[:2], *(1,) * (x.dim() - 2)) * x + y


@register("Axpy", "torch")
def _axpy(node: Node, ctx: TorchContext) -> nn.Module:
    return Axpy()
