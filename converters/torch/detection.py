"""The SSD layers: Permute, Normalize (Caffe's eps placement), PriorBox (a constant per input
size) and DetectionOutput (decode, per-class NMS and keep_top_k, in detection_post.py)."""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node, Shape
from ...ir.infer import require_weights
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.detection import (
    HAPPYNEAR_EPS,
    detection_settings,
    happynear_normalize,
    permute_order,
    prior_boxes,
)
from ._base import TorchContext, buffer
from .detection_post import detect


class Permute(nn.Module):
    def __init__(self, order: tuple[int, ...]) -> None:
        super().__init__()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order).contiguous()


@register("Permute", "torch")
def _permute(node: Node, ctx: TorchContext) -> nn.Module:
    return Permute(permute_order(node.param.permute_param, len(ctx.in_shapes[0])))


def _normalized(x: torch.Tensor, across_spatial: bool, eps: float) -> tuple[torch.Tensor, ...]:
    """x / norm and the norm; Caffe adds eps to the sum of squares before the square root in
    both modes; across the sample it multiplies by the reciprocal, per position it divides."""
    if across_spatial:
        axes = tuple(range(1, x.dim()))
        norm = torch.sqrt((x * x).sum(dim=axes, keepdim=True) + eps)
        return x * (1.0 / norm.double()).to(x.dtype), norm
    norm = torch.sqrt((x * x).sum(dim=1, keepdim=True) + eps)
    return x / norm, norm


def _per_channel(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    return scale if scale.dim() == 0 else scale.reshape(-1, *(1,) * (ndim - 2))


class CaffeNormalizeGrad(torch.autograd.Function):
    """Normalize with the SSD fork's backward: ``scale / norm * (g - x (x . g) / norm^2)`` (the
    scales left out of the dot product) and ``sum(top * g) / scale`` for the scale."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, across: bool, eps: float):
        y, norm = _normalized(x, across, eps)
        top = y * _per_channel(scale, x.dim())
        ctx.save_for_backward(x, scale, norm, top)
        ctx.across = across
        return top

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, scale, norm, top = ctx.saved_tensors
        axes = tuple(range(1, x.dim())) if ctx.across else (1,)
        dot = (x * g).sum(dim=axes, keepdim=True)
        bottom = (g - x * dot / (norm * norm)) / norm * _per_channel(scale, x.dim())
        product = top * g
        if scale.dim() == 0:
            scale_diff = product.sum() / scale
        else:
            reduce = (0, *range(2, x.dim()))
            scale_diff = product.sum(dim=reduce).reshape(scale.shape) / scale
        return bottom, scale_diff, None, None


class Normalize(nn.Module):
    """L2 normalisation over channels (per position) or over the whole sample, then a scale
    (``caffe_backward``: with the fork's backward, in nets built for training)."""

    blob_slots = ("scale",)

    def __init__(
        self, scale: torch.Tensor, across_spatial: bool, eps: float, caffe_backward: bool = False
    ) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.across_spatial = across_spatial
        self.eps = eps
        self.caffe_backward = caffe_backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.caffe_backward:
            return CaffeNormalizeGrad.apply(x, self.scale, self.across_spatial, self.eps)
        y, _ = _normalized(x, self.across_spatial, self.eps)
        return y * _per_channel(self.scale, x.dim())


class HappynearNormalize(nn.Module):
    """happynear/caffe-windows' Normalize: x over its L2 (or L1) norm over the channels at each
    position, eps 1e-6 inside; top 0 is N x C x H x W even for a 2-D bottom, top 1 (when
    asked) the norm. Its diff reaches the bottom only with ``bp_norm``, as in the fork."""

    def __init__(self, l1: bool, tops: int, bp_norm: bool) -> None:
        super().__init__()
        self.l1, self.tops, self.bp_norm = l1, tops, bp_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = x.reshape(*x.shape, *(1,) * (4 - x.dim()))
        if self.l1:
            norm = x.abs().sum(dim=1, keepdim=True) + HAPPYNEAR_EPS
        else:
            norm = torch.sqrt((x * x).sum(dim=1, keepdim=True) + HAPPYNEAR_EPS)
        y = x / norm
        if self.tops == 1:
            return y
        return y, norm if self.bp_norm else norm.detach()


@register("Normalize", "torch")
def _normalize(node: Node, ctx: TorchContext) -> nn.Module:
    if happynear_normalize(node.param):
        p = node.param.normalize_param
        return HappynearNormalize(p.normalize_type == "L1", len(node.outputs), p.bp_norm)
    require_weights(node)
    p = node.param.norm_param
    return Normalize(
        buffer(node.blobs[0]), bool(p.across_spatial), float(p.eps), ctx.graph.training
    )


class PriorBox(nn.Module):
    """The prior boxes: a buffer for the net's own input size (so torch.export sees a constant),
    recomputed and cached for other sizes; only the bottoms' spatial sizes matter."""

    def __init__(self, param: caffe_pb2.PriorBoxParameter, shapes: list[Shape]) -> None:
        super().__init__()
        self._param = param.SerializeToString()  # bytes: the module stays picklable
        self._sizes = tuple(tuple(s[2:]) for s in shapes)
        self.register_buffer("priors", torch.from_numpy(prior_boxes(param, shapes)))
        self._cache: dict[tuple, torch.Tensor] = {}

    def forward(self, *bottoms: torch.Tensor) -> torch.Tensor:
        sizes = tuple(tuple(int(d) for d in b.shape[2:]) for b in bottoms)
        if sizes == self._sizes:
            return self.priors
        key = (sizes, self.priors.device)
        if key not in self._cache:
            param = caffe_pb2.PriorBoxParameter.FromString(self._param)
            shapes: list[Shape] = [(1, 1, *size) for size in sizes]
            self._cache[key] = torch.from_numpy(prior_boxes(param, shapes)).to(self.priors.device)
        return self._cache[key]


@register("PriorBox", "torch")
def _prior_box(node: Node, ctx: TorchContext) -> nn.Module:
    return PriorBox(node.param.prior_box_param, ctx.in_shapes)


class DetectionOutput(nn.Module):
    """Caffe-exact SSD detections, 1 x 1 x R x 7 (R depends on the data), any batch size."""

    def __init__(self, param: caffe_pb2.DetectionOutputParameter) -> None:
        super().__init__()
        self.settings = detection_settings(param)

    def forward(
        self, loc: torch.Tensor, conf: torch.Tensor, prior: torch.Tensor, *_
    ) -> torch.Tensor:
        return detect(loc, conf, prior, self.settings)


@register("DetectionOutput", "torch")
def _detection_output(node: Node, ctx: TorchContext) -> nn.Module:
    return DetectionOutput(node.param.detection_output_param)
