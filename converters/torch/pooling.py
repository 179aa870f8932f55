"""Pooling with Caffe's exact rules (ceil rounding, last-window clip, AVE divisor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ir.graph import Node
from ...proto import caffe_pb2
from ...registry import register
from ...shapes.geometry import PoolGeometry, pool_geometry, unsupported_pooling
from ._base import TorchContext

MAX, AVE = caffe_pb2.PoolingParameter.MAX, caffe_pb2.PoolingParameter.AVE


class CaffePool2d(nn.Module):
    """MAX or AVE pooling for any input size; geometry comes from the shared shapes module."""

    def __init__(self, param: caffe_pb2.PoolingParameter, with_mask: bool = False) -> None:
        super().__init__()
        self.with_mask = with_mask  # MAX with Caffe's argmax mask as a second top
        self._param_bytes = param.SerializeToString()  # bytes: the module stays picklable
        self.param = param
        self._divisor_fix: dict[tuple, torch.Tensor] = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("param")
        state["_divisor_fix"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.param = caffe_pb2.PoolingParameter.FromString(self._param_bytes)

    def _fix(self, geom: PoolGeometry, like: torch.Tensor) -> torch.Tensor:
        """k*k / Caffe's divisor per output position (1 except where windows overhang)."""
        key = (geom, like.device, like.dtype)
        if key not in self._divisor_fix:
            rows = torch.tensor(geom.axes[0].divisors(), dtype=torch.float64)
            cols = torch.tensor(geom.axes[1].divisors(), dtype=torch.float64)
            area = geom.kernel[0] * geom.kernel[1]
            fix = area / (rows[:, None] * cols[None, :])
            self._divisor_fix[key] = fix.to(device=like.device, dtype=like.dtype)
        return self._divisor_fix[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        geom = pool_geometry(self.param, x.shape[2], x.shape[3])
        if self.with_mask:
            return max_with_mask(x, geom)
        (ph, pw), (eh, ew) = geom.pad_begin, geom.pad_end
        k, s = geom.kernel, geom.stride
        ceil = torch_rounding(geom)
        if ceil is not None:  # torch's own windows are Caffe's: no padded copy
            if geom.method == MAX:
                return F.max_pool2d(x, k, s, (ph, pw), ceil_mode=ceil)
            return F.avg_pool2d(x, k, s, (ph, pw), ceil_mode=ceil, count_include_pad=True)
        if geom.method == MAX:
            if (ph, pw) == (eh, ew) and ph <= k[0] // 2 and pw <= k[1] // 2:
                return F.max_pool2d(x, k, s, (ph, pw))
            # Caffe starts every window at -FLT_MAX: a window wholly past the input (a stride
            # beyond the kernel, ceil rounding, no padding) gives -FLT_MAX, not -inf.
            lowest = float(torch.finfo(x.dtype).min)
            return F.max_pool2d(F.pad(x, (pw, ew, ph, eh), value=lowest), k, s)
        if (ph, pw) == (eh, ew) and ph <= k[0] // 2 and pw <= k[1] // 2:
            return F.avg_pool2d(x, k, s, (ph, pw), count_include_pad=True)
        y = F.avg_pool2d(F.pad(x, (pw, ew, ph, eh)), k, s)
        return y * self._fix(geom, y) if geom.needs_divisor_fix else y


def max_with_mask(x: torch.Tensor, geom: PoolGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """MAX pooling and Caffe's mask: the first maximum's index ``h * W + w`` in the unpadded
    plane, as a float, -1 where a window lies wholly in the padding (Caffe's -FLT_MAX start).
    Windows see an input padded with the lowest float, so padding never wins a tie."""
    (ph, pw), (eh, ew) = geom.pad_begin, geom.pad_end
    lowest = float(torch.finfo(x.dtype).min)
    padded = F.pad(x, (pw, ew, ph, eh), value=lowest)
    values, index = F.max_pool2d(padded, geom.kernel, geom.stride, return_indices=True)
    width = padded.shape[3]
    row, col = index // width - ph, index % width - pw
    inside = (row >= 0) & (row < x.shape[2]) & (col >= 0) & (col < x.shape[3])
    mask = torch.where(inside, row * x.shape[3] + col, torch.full_like(index, -1))
    return values, mask.to(x.dtype)


def _torch_out(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """PyTorch's pooling output size (``pooling_output_shape``)."""
    out = (size + 2 * p - k + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def torch_rounding(geom: PoolGeometry) -> bool | None:
    """``ceil_mode`` for which PyTorch's pooling makes Caffe's windows, or None when neither
    does. Then the windows, their clipping and the AVE divisors (the window clipped to the
    padded input) are Caffe's, provided no window lies wholly outside the input (Caffe starts
    such a window at -FLT_MAX, PyTorch at -inf) and the padding is at most half the kernel."""
    for ceil in (False, True):
        fits = all(
            a.pad <= a.kernel // 2
            and _torch_out(a.size, a.kernel, a.stride, a.pad, ceil) == a.out
            and (a.out - 1) * a.stride - a.pad < a.size
            for a in geom.axes
        )
        if fits:
            return ceil
    return None


@register("Pooling", "torch", check=unsupported_pooling)
def _pooling(node: Node, ctx: TorchContext) -> nn.Module:
    return CaffePool2d(node.param.pooling_param, with_mask=len(node.outputs) > 1)
