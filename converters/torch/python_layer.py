"""``type: "Python"`` layers in PyTorch: a known class runs as its built-in replacement (see
caffe_compat.shapes.python_layer); any other runs the user's own ``reshape`` and ``forward`` on
float32 blobs holding the bottoms (on the CPU) and returns the tops as tensors. Its ``backward``,
when the net is trained, is the user's too, called through an autograd Function.

The instance is the node's (set up once, by the shape rule). Its parameter blobs
(``self.blobs.add_blob`` in ``setup``) are the module's parameters ``blob0``, ``blob1``...
(``blob_slots``), started from the net's weights when it has them, else from what ``setup``
wrote: before each forward their values are written into the user's blobs, and after it what
the forward left there goes back (nothing to copy when they share memory, as in pycaffe); the
diffs the user's ``backward`` writes there are their gradients."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from ...ir.graph import Node
from ...registry import builtin_entry, register
from ...shapes.python_layer import call_layer, replacement, set_up
from ._base import TorchContext


def _blobs(arrays: list[np.ndarray]) -> list[Any]:
    from ...pycaffe import Blob

    return [Blob(a.shape, a) for a in arrays]


def _array(blob: Any, which: str) -> np.ndarray:
    """A blob's data or diff without the pycaffe blob's first-read bookkeeping."""
    view = getattr(blob, "_view", None)
    if which == "data" and view is not None:
        return view()
    return getattr(blob, which)


class _UserCall(torch.autograd.Function):
    """Forward and backward through the user's layer (Caffe's ``PythonLayer``)."""

    @staticmethod
    def forward(ctx, module: PythonLayer, *args: torch.Tensor):
        params, xs = args[: module.count], args[module.count :]
        for blob, p in zip(module.layer.blobs, params):
            values = p.detach().cpu().numpy()
            target = _array(blob, "data")
            if not np.shares_memory(target, values):
                np.copyto(target, values.reshape(target.shape), casting="unsafe")
        arrays = [x.detach().cpu().numpy().astype(np.float32) for x in xs]
        bottom, top = _blobs(arrays), _blobs([np.zeros(1, np.float32) for _ in range(module.tops)])
        call_layer(module.layer, "reshape", bottom, top)
        call_layer(module.layer, "forward", bottom, top)
        for blob, p in zip(module.layer.blobs, params):  # what the forward wrote there stays
            target = _array(blob, "data")
            if p.device.type != "cpu" or not np.shares_memory(target, p.detach().numpy()):
                p.data.copy_(torch.from_numpy(np.asarray(target, np.float32)).reshape(p.shape))
        device = xs[0].device if xs else (params[0].device if params else torch.device("cpu"))
        ctx.module, ctx.blobs, ctx.device = module, (bottom, top), device
        ctx.param_meta = [(p.shape, p.dtype, p.device, p.requires_grad) for p in params]
        return tuple(torch.from_numpy(np.array(t.data, np.float32)).to(device) for t in top)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        bottom, top = ctx.blobs
        for blob, g in zip(top, grads):
            blob.diff[...] = g.detach().cpu().numpy()
        # The user's backward writes (or adds to) its blobs' diffs; what it adds in this call is
        # the parameters' gradient, and the blobs' diffs are left as they were (pycaffe's net
        # adds the gradient to them itself, as it does for every layer).
        held = [np.array(_array(b, "diff"), copy=True) for b in ctx.module.layer.blobs]
        for blob in ctx.module.layer.blobs:
            _array(blob, "diff")[...] = 0
        wanted = [bool(n) for n in ctx.needs_input_grad[1 + ctx.module.count :]]
        call_layer(ctx.module.layer, "backward", top, wanted, bottom)
        param_grads = []
        for blob, before, (shape, dtype, device, _) in zip(
            ctx.module.layer.blobs, held, ctx.param_meta
        ):
            diff = _array(blob, "diff")
            grad = torch.from_numpy(np.array(diff, np.float32)).reshape(shape)
            param_grads.append(grad.to(device, dtype))
            diff[...] = before
        diffs = [torch.from_numpy(np.array(b.diff, np.float32)).to(ctx.device) for b in bottom]
        return (None, *param_grads, *diffs)


class PythonLayer(nn.Module):
    """The user's ``caffe.Layer`` subclass, set up once on the declared shapes, as Caffe does."""

    def __init__(self, node: Node, in_shapes: list[tuple[int, ...]]) -> None:
        super().__init__()
        bottom = _blobs([np.zeros(shape, np.float32) for shape in in_shapes])
        top = _blobs([np.zeros(1, np.float32) for _ in node.outputs])
        if node.state is None:
            set_up(node, bottom, top)
        self.layer = node.state
        self.tops = len(node.outputs)
        held = [np.asarray(_array(b, "data")) for b in self.layer.blobs]
        given = list(node.blobs) or held
        if len(given) != len(held):
            raise ValueError(f"the net gives {len(given)} blob(s), setup added {len(held)}")
        self.count = len(given)
        self.blob_slots = [f"blob{i}" for i in range(self.count)]
        for i, (values, blob) in enumerate(zip(given, held)):
            if tuple(np.shape(values)) != tuple(blob.shape):
                raise ValueError(
                    f"blob {i} has shape {tuple(np.shape(values))}, setup made {tuple(blob.shape)}"
                )
            array = np.asarray(values)
            tensor = torch.from_numpy(array if array.dtype == np.float32 else array.astype("f4"))
            self.register_parameter(f"blob{i}", nn.Parameter(tensor, requires_grad=True))

    def forward(self, *xs: torch.Tensor):
        params = [getattr(self, name) for name in self.blob_slots]
        tops = _UserCall.apply(self, *params, *xs)
        return tops[0] if self.tops == 1 else tops


@register("Python", "torch")
def _python(node: Node, ctx: TorchContext) -> nn.Module:
    known = replacement(node)
    if known is not None:
        entry = builtin_entry(known.type, "torch")
        assert entry is not None
        return entry.fn(known, dataclasses.replace(ctx, node=known))
    return PythonLayer(node, ctx.in_shapes)
