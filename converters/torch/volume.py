"""C3D's layers in PyTorch. Pooling3D: the input padded explicitly so every window is whole (MAX:
with the lowest float, which never wins; AVE: zeros), a plain 3-D pooling, and for AVE a constant
factor turning the kernel volume into C3D's divisor where windows are clipped. Convolution3D:
Convolution's module on the rewritten node (caffe_compat.shapes.volume), its bias held in C3D's
1 x 1 x 1 x 1 x O blob shape (what training binds and saves) and read flat."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ir.graph import Node
from ...proto import caffe_pb2
from ...registry import builtin_entry, register
from ...shapes.volume import conv3d_as_convolution, pool3d_geometry
from ._base import TorchContext

MAX = caffe_pb2.Pooling3DParameter.MAX


class CaffePool3d(nn.Module):
    def __init__(self, param: caffe_pb2.Pooling3DParameter) -> None:
        super().__init__()
        self._param_bytes = param.SerializeToString()  # bytes: the module stays picklable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = caffe_pb2.Pooling3DParameter.FromString(self._param_bytes)
        geom = pool3d_geometry(p, tuple(x.shape))
        pads: list[int] = []
        for begin, end in reversed(list(zip(geom.pad, geom.pad_end))):
            pads += [begin, end]  # F.pad lists the last axis first
        if geom.method == MAX:
            lowest = float(torch.finfo(x.dtype).min)
            padded = F.pad(x, pads, value=lowest) if any(pads) else x
            return F.max_pool3d(padded, geom.kernel, geom.stride)
        y = F.avg_pool3d(F.pad(x, pads) if any(pads) else x, geom.kernel, geom.stride)
        spans = [torch.tensor([s[2] for s in geom.spans(a)], dtype=torch.float64) for a in range(3)]
        divisor = spans[0][:, None, None] * spans[1][None, :, None] * spans[2][None, None, :]
        volume = geom.kernel[0] * geom.kernel[1] * geom.kernel[2]
        if bool((divisor == volume).all()):
            return y
        return y * (volume / divisor).to(device=y.device, dtype=y.dtype)


@register("Pooling3D", "torch")
def _pooling3d(node: Node, ctx: TorchContext) -> nn.Module:
    return CaffePool3d(node.param.pooling3d_param)


class CaffeConv3d(nn.Module):
    """Convolution's module with the bias blob in C3D's shape, handed to it flat each call."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        bias = conv._parameters.get("bias")
        if bias is None:
            self.blob_slots = ("conv.weight",)
        else:
            del conv._parameters["bias"]
            self.bias = nn.Parameter(bias.data.reshape(1, 1, 1, 1, -1), bias.requires_grad)
            self.blob_slots = ("conv.weight", "bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "bias" in self._parameters or "bias" in self._buffers:
            self.conv.bias = self.bias.reshape(-1)
        return self.conv(x)


@register("Convolution3D", "torch")
def _convolution3d(node: Node, ctx: TorchContext) -> nn.Module:
    conv = builtin_entry("Convolution", "torch")
    assert conv is not None
    rewritten = conv3d_as_convolution(node, ctx.in_shapes)
    return CaffeConv3d(conv.fn(rewritten, TorchContext(ctx.graph, rewritten)))
