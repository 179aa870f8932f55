"""ROIPooling and PSROIPooling in PyTorch without torchvision: every ROI's bins are computed at
once (the forks' float32 arithmetic, see caffe_compat.reference.roi), then the windows are
gathered and reduced for a chunk of ROIs at a time.

Without autograd (inference, verify, synth), ROIPooling takes each bin's maximum from sparse
tables instead (``_table_max``: four lookups per bin, whatever its size), which is what makes
a detector's hundreds of ROIs per image on a large map cheap.

ROIPooling gathers, per ROI and bin row, the ``KH`` rows of the widest bin (masked past the
bin's end) and takes their maximum, then does the same over ``KW`` columns: scratch ``r x C x
pooled_h x KH x W`` per chunk of r ROIs. PSROIPooling sums with the two bin masks (an einsum)
and divides by the bin's area. Autograd's gradient is the forks' backward (argmax / even share).
"""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.roi import psroi_settings, roi_pad_ratio, roi_pooling_settings
from ._base import TorchContext

SCRATCH = 1 << 24  # float32 values gathered per chunk of ROIs


def c_round(x: torch.Tensor) -> torch.Tensor:
    """C's round(): halves away from zero (torch.round rounds them to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _images(rois: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.trunc(rois[:, 0]).long().clamp(0, batch - 1)


def _roi_edges(rois: torch.Tensor, count: int, scale: float, limit: int, axis: int):
    """Clipped [start, end) of each of ``count`` bins on ``axis`` (0: rows, 1: columns)."""
    r = rois.float()
    start = c_round(r[:, 1 + (1 - axis)] * scale).long()
    end = c_round(r[:, 3 + (1 - axis)] * scale).long()
    span = torch.clamp(end - start + 1, min=1).float()
    step = span / float(count)
    p = torch.arange(count, dtype=torch.float32, device=rois.device)
    low = torch.floor(p[None] * step[:, None]).long() + start[:, None]
    high = torch.ceil((p[None] + 1) * step[:, None]).long() + start[:, None]
    return low.clamp(0, limit), high.clamp(0, limit)


def _window(low: torch.Tensor, high: torch.Tensor, limit: int):
    """Indices (R, bins, K) of each bin's cells, clamped, and which of them are inside."""
    k = max(int((high - low).max().item()) if low.numel() else 1, 1)
    index = low[..., None] + torch.arange(k, device=low.device)
    return index.clamp(max=limit - 1), index < high[..., None]


def _padded(rois: torch.Tensor, ratio: float) -> torch.Tensor:
    """MS-CNN's ``pad_ratio``: each ROI widened by that share of its size (+1) on each side,
    in float32 steps (``caffe_compat.shapes.roi.padded_rois``)."""
    r = rois.float()
    pad_w = ((r[:, 3] - r[:, 1]) + 1) * ratio
    pad_h = ((r[:, 4] - r[:, 2]) + 1) * ratio
    return torch.stack(
        [r[:, 0], r[:, 1] - pad_w, r[:, 2] - pad_h, r[:, 3] + pad_w, r[:, 4] + pad_h], 1
    )


class ROIPooling(nn.Module):
    """caffe-fast-rcnn's ROI max pooling (an empty bin gives 0), with MS-CNN's ``pad_ratio``."""

    def __init__(self, pooled_h: int, pooled_w: int, scale: float, pad_ratio: float = 0.0) -> None:
        super().__init__()
        self.pooled, self.scale, self.pad_ratio = (pooled_h, pooled_w), scale, pad_ratio

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        rois = rois.reshape(-1, 5)
        if self.pad_ratio:
            rois = _padded(rois, self.pad_ratio)
        n, c, h, w = x.shape
        image = _images(rois, n)
        rows = _roi_edges(rois, self.pooled[0], self.scale, h, 0)
        cols = _roi_edges(rois, self.pooled[1], self.scale, w, 1)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return _table_max(x, image, rows, cols)
        row_index, row_in = _window(*rows, h)  # (R, ph, KH)
        col_index, col_in = _window(*cols, w)  # (R, pw, KW)
        per_roi = c * self.pooled[0] * row_index.shape[-1] * w
        step = max(1, SCRATCH // max(per_roi, 1))
        parts = []
        for s in range(0, rois.shape[0], step):
            part = slice(s, s + step)
            feat = x[image[part]]  # (r, C, H, W)
            r = feat.shape[0]
            gather = row_index[part].reshape(r, 1, -1, 1).expand(r, c, -1, w)
            picked = feat.gather(2, gather).reshape(r, c, self.pooled[0], -1, w)
            lowest = torch.finfo(x.dtype).min
            fill = torch.full((), lowest, dtype=x.dtype, device=x.device)
            by_row = torch.where(row_in[part][:, None, :, :, None], picked, fill).amax(3)
            gather = col_index[part].reshape(r, 1, 1, -1).expand(r, c, self.pooled[0], -1)
            picked = by_row.gather(3, gather).reshape(r, c, self.pooled[0], self.pooled[1], -1)
            pooled = torch.where(col_in[part][:, None, None], picked, fill).amax(-1)
            empty = (rows[1][part] <= rows[0][part])[:, :, None] | (cols[1][part] <= cols[0][part])[
                :, None, :
            ]
            parts.append(torch.where(empty[:, None], torch.zeros_like(pooled), pooled))
        if not parts:
            return x.new_zeros((0, c, *self.pooled))
        return torch.cat(parts)


def _levels(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """floor(log2(length)) of each bin, -1 for an empty one."""
    length = (high - low).clamp(min=0)
    level = torch.floor(torch.log2(length.clamp(min=1).double())).long()
    return torch.where(length > 0, level, torch.full_like(level, -1))


def _table_max(x: torch.Tensor, image: torch.Tensor, rows, cols) -> torch.Tensor:
    """ROI max pooling without autograd, by sparse tables: at level (a, b) the table holds the
    maximum of every 2^a x 2^b window of one image's map, so a bin of L rows and M columns
    (2^a <= L < 2^(a+1), 2^b <= M < 2^(b+1)) is the maximum of the four windows at its corners.
    The levels are made one from another (each a maximum of two shifted copies of the last),
    one at a time per image: scratch two maps and the gathered bins, whatever the ROIs' sizes,
    and four gathers per bin instead of a gather of its whole window. The maps are laid out
    channels last, so each gather copies one contiguous row of channels. Exact (a maximum)."""
    count, c = image.shape[0], x.shape[1]
    ph, pw = rows[0].shape[1], cols[0].shape[1]
    out = x.new_zeros((count, ph, pw, c))
    row_level, col_level = _levels(*rows), _levels(*cols)  # (R, ph), (R, pw)
    for n in torch.unique(image).tolist():
        mine = (image == n).nonzero()[:, 0]
        ra, cb = row_level[mine], col_level[mine]
        table_a = x[n].permute(1, 2, 0).contiguous()  # (H, W, C)
        for a in range(int(ra.max()) + 1):
            if a:  # rows y .. y + 2^a - 1
                half = 1 << (a - 1)
                table_a = torch.maximum(table_a[:-half], table_a[half:])
            if not bool((ra == a).any()):
                continue
            table = table_a
            for b in range(int(cb.max()) + 1):
                if b:  # columns x .. x + 2^b - 1
                    half = 1 << (b - 1)
                    table = torch.maximum(table[:, :-half], table[:, half:])
                at = ((ra == a)[:, :, None] & (cb == b)[:, None, :]).nonzero()  # (k, 3)
                if not at.numel():
                    continue
                roi, i, j = at.unbind(1)
                r = mine[roi]
                y0, y1 = rows[0][r, i], rows[1][r, i] - (1 << a)
                x0, x1 = cols[0][r, j], cols[1][r, j] - (1 << b)
                best = torch.maximum(table[y0, x0], table[y0, x1])
                best = torch.maximum(best, torch.maximum(table[y1, x0], table[y1, x1]))
                out[r, i, j] = best
    return out.permute(0, 3, 1, 2).contiguous()


def _psroi_edges(rois: torch.Tensor, group: int, scale: float, limit: int, axis: int):
    r = c_round(rois.float()[:, 1 + (1 - axis) :: 2][:, :2]).double()
    start = (r[:, 0] * scale).float()
    end = ((r[:, 1] + 1.0) * scale).float()
    step = torch.clamp(end.double() - start.double(), min=0.1).float() / float(group)
    p = torch.arange(group, dtype=torch.float32, device=rois.device)
    low = torch.floor(p[None] * step[:, None] + start[:, None]).long()
    high = torch.ceil((p[None] + 1) * step[:, None] + start[:, None]).long()
    return low.clamp(0, limit), high.clamp(0, limit)


class PSROIPooling(nn.Module):
    """R-FCN's position-sensitive ROI average pooling."""

    def __init__(self, dim: int, group: int, scale: float) -> None:
        super().__init__()
        self.dim, self.group, self.scale = dim, group, scale

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        rois = rois.reshape(-1, 5)
        n, c, h, w = x.shape
        g = self.group
        image = _images(rois, n)
        rows = _psroi_edges(rois, g, self.scale, h, 0)
        cols = _psroi_edges(rois, g, self.scale, w, 1)
        cells_h, cells_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        row_mask = ((cells_h >= rows[0][..., None]) & (cells_h < rows[1][..., None])).to(x.dtype)
        col_mask = ((cells_w >= cols[0][..., None]) & (cells_w < cols[1][..., None])).to(x.dtype)
        area = ((rows[1] - rows[0])[:, :, None] * (cols[1] - cols[0])[:, None, :]).to(x.dtype)
        step = max(1, SCRATCH // max(c * h * w, 1))
        parts = []
        for s in range(0, rois.shape[0], step):
            part = slice(s, s + step)
            feat = x[image[part]].reshape(-1, self.dim, g, g, h, w)
            parts.append(torch.einsum("rcijhw,rih,rjw->rcij", feat, row_mask[part], col_mask[part]))
        if not parts:
            return x.new_zeros((0, self.dim, g, g))
        sums = torch.cat(parts)
        safe = torch.where(area > 0, area, torch.ones_like(area))[:, None]
        return torch.where(area[:, None] > 0, sums / safe, torch.zeros_like(sums))


@register("ROIPooling", "torch")
def _roi_pooling(node: Node, ctx: TorchContext) -> nn.Module:
    p = node.param.roi_pooling_param
    return ROIPooling(*roi_pooling_settings(p), pad_ratio=roi_pad_ratio(p))


@register("PSROIPooling", "torch")
def _psroi_pooling(node: Node, ctx: TorchContext) -> nn.Module:
    return PSROIPooling(*psroi_settings(node.param.psroi_pooling_param))
