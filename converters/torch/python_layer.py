"""``type: "Python"`` layers in PyTorch: a known class runs as its built-in replacement (see
caffe_compat.shapes.python_layer); any other runs the user's own ``reshape`` and ``forward`` on
float32 blobs holding the bottoms (on the CPU) and returns the tops as tensors. Its ``backward``,
when the net is trained, is the user's too, called through an autograd Function."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from ...ir.graph import Node
from ...registry import builtin_entry, register
from ...shapes.python_layer import call_layer, replacement, user_layer
from ._base import TorchContext


def _blobs(arrays: list[np.ndarray]) -> list[Any]:
    from ...pycaffe import Blob

    return [Blob(a.shape, a) for a in arrays]


class _UserCall(torch.autograd.Function):
    """Forward and backward through the user's layer (Caffe's ``PythonLayer``)."""

    @staticmethod
    def forward(ctx, module: PythonLayer, *xs: torch.Tensor):
        arrays = [x.detach().cpu().numpy().astype(np.float32) for x in xs]
        bottom, top = _blobs(arrays), _blobs([np.zeros(1, np.float32) for _ in range(module.tops)])
        call_layer(module.layer, "reshape", bottom, top)
        call_layer(module.layer, "forward", bottom, top)
        device = xs[0].device if xs else torch.device("cpu")
        ctx.module, ctx.blobs, ctx.device = module, (bottom, top), device
        return tuple(torch.from_numpy(np.array(t.data, np.float32)).to(device) for t in top)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        bottom, top = ctx.blobs
        for blob, g in zip(top, grads):
            blob.diff[...] = g.detach().cpu().numpy()
        call_layer(ctx.module.layer, "backward", top, [True] * len(bottom), bottom)
        diffs = [torch.from_numpy(np.array(b.diff, np.float32)).to(ctx.device) for b in bottom]
        return (None, *diffs)


class PythonLayer(nn.Module):
    """The user's ``caffe.Layer`` subclass, set up once on the declared shapes, as Caffe does."""

    def __init__(self, node: Node, in_shapes: list[tuple[int, ...]]) -> None:
        super().__init__()
        self.layer = user_layer(node)
        self.tops = len(node.outputs)
        bottom = _blobs([np.zeros(shape, np.float32) for shape in in_shapes])
        top = _blobs([np.zeros(1, np.float32) for _ in range(self.tops)])
        call_layer(self.layer, "setup", bottom, top)

    def forward(self, *xs: torch.Tensor):
        tops = _UserCall.apply(self, *xs)
        return tops[0] if self.tops == 1 else tops


@register("Python", "torch")
def _python(node: Node, ctx: TorchContext) -> nn.Module:
    known = replacement(node)
    if known is not None:
        entry = builtin_entry(known.type, "torch")
        assert entry is not None
        return entry.fn(known, dataclasses.replace(ctx, node=known))
    return PythonLayer(node, ctx.in_shapes)
