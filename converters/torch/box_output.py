"""BoxOutput in PyTorch (MS-CNN; see caffe_compat.shapes.box_output): per image (MS-CNN runs one
at a time), every scale decoded at once, the fork's (score, index) order, and its greedy NMS as
the fixed point over the overlap matrix, a block of boxes at a time (``greedy_nms``), in its
three modes.
DecodeBBox: the fork's TEST forward on every row at once. BoxGroupOutput (Cascade R-CNN): per
image, every pair and field decoded at once, a stable sort, greedy_nms over JaccardOverlap."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.box_output import (
    BoxSettings,
    GroupSettings,
    box_settings,
    decode_settings,
    group_settings,
)
from ._base import TorchContext, greedy_nms


def _overlap(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """BoxIOU between every earlier box of ``a`` and later box of ``b`` (``[x, y, w, h]``)."""
    x, y, w, h = a.unbind(1)
    u, v, s, t = b.unbind(1)
    width = torch.minimum((x + w)[:, None], (u + s)[None]) - torch.maximum(x[:, None], u[None])
    height = torch.minimum((y + h)[:, None], (v + t)[None]) - torch.maximum(y[:, None], v[None])
    over = torch.where((width <= 0) | (height <= 0), torch.zeros_like(width), width * height)
    area, later = w * h, s * t
    if mode == "IOMU":
        union = torch.minimum(area[:, None], later[None])
    elif mode == "IOFU":
        union = area[:, None].expand_as(over)  # the earlier (kept) box's area
    else:
        union = area[:, None] + later[None] - over
    empty = (w <= 0) | (h <= 0)
    ratio = over / union
    return torch.where(empty[:, None] | ((s <= 0) | (t <= 0))[None], torch.zeros_like(ratio), ratio)


def _nms(boxes: torch.Tensor, overlap, threshold: float, mode: str, most: int) -> torch.Tensor:
    """Indices of the boxes (score order) greedy NMS keeps, the first ``most`` (> 0)."""
    return greedy_nms(
        boxes.shape[0], lambda i, j: overlap(boxes[i], boxes[j], mode) > threshold, most
    )


class BoxOutput(nn.Module):
    def __init__(self, node: Node, maps: int) -> None:
        super().__init__()
        self.s: BoxSettings = box_settings(node.param, maps)
        self.tops = len(node.outputs)

    def _candidates(self, maps: tuple[torch.Tensor, ...], image: int) -> torch.Tensor:
        s, rows = self.s, []
        for j, x in enumerate(maps):
            _, c, height, width = x.shape
            k = c - 4
            v = x[image].reshape(c, -1)
            fg = v[1:k].amax(0) - v[0] if k > 1 else torch.full_like(v[0], -math.inf)
            bx, by, bw, bh = v[k], v[k + 1], v[k + 2], v[k + 3]
            if s.mean is not None and s.std is not None:
                bx, by = bx * s.std[0] + s.mean[0], by * s.std[1] + s.mean[1]
                bw, bh = bw * s.std[2] + s.mean[2], bh * s.std[3] + s.mean[3]
            cell = torch.arange(height * width, device=x.device)
            cols, rows_ = (cell % width).to(x.dtype), (cell // width).to(x.dtype)
            rate = s.rates[j]
            bx = bx.clamp(-1 / s.xyr, 1 / s.xyr) * s.field_w[j] + (cols + 0.5) * rate
            by = by.clamp(-1 / s.xyr, 1 / s.xyr) * s.field_h[j] + (rows_ + 0.5) * rate
            low, high = math.log(1 / s.whr), math.log(s.whr)
            bw = s.field_w[j] * torch.exp(bw.clamp(low, high))
            bh = s.field_h[j] * torch.exp(bh.clamp(low, high))
            bx, by = (bx - bw / 2).clamp(min=0), (by - bh / 2).clamp(min=0)
            bw = torch.minimum(bw, width * rate - bx)
            bh = torch.minimum(bh, height * rate - by)
            keep = (fg >= s.fg_thr) & (bw >= s.min_size) & (bh >= s.min_size)
            rows.append(torch.stack([bx, by, bw, bh, fg], 1)[keep])
        return torch.cat(rows)

    def forward(self, *maps: torch.Tensor):
        s, found = self.s, []
        for image in range(maps[0].shape[0]):
            boxes = self._candidates(maps, image).flip(0)  # equal scores: the later one first
            boxes = boxes[torch.sort(-boxes[:, 4], stable=True).indices]
            if s.max_nms > 0:
                boxes = boxes[: s.max_nms]
            boxes = boxes[_nms(boxes[:, :4], _overlap, s.iou_thr, s.mode, s.max_post)]
            x, y, w, h, score = boxes.unbind(1)
            found.append(torch.stack([torch.full_like(x, image), x, y, x + w, y + h, score], 1))
        return box_tops(found, maps[0], self.tops)


def box_tops(found: list[torch.Tensor], like: torch.Tensor, tops: int):
    """The ROIs ``R x 5 x 1 x 1`` (and ``R x 6 x 1 x 1`` with scores) from each image's kept
    rows ``[image, x1, y1, x2, y2, score]``; none kept: the forks' dummy ROI, score 0."""
    rows = torch.cat(found)
    if rows.shape[0] == 0:
        rows = torch.tensor([[0.0, 1, 1, 10, 10, 0]], dtype=like.dtype, device=like.device)
        scored = torch.zeros_like(rows)
    else:
        scored = rows
    rois = rows[:, :5].reshape(-1, 5, 1, 1)
    return (rois, scored.reshape(-1, 6, 1, 1)) if tops == 2 else rois


@register("BoxOutput", "torch")
def _box_output(node: Node, ctx: TorchContext) -> nn.Module:
    return BoxOutput(node, len(node.inputs))


class DecodeBBox(nn.Module):
    def __init__(self, node: Node) -> None:
        super().__init__()
        mean, std = decode_settings(node.param)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, offsets: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        rois = rois.reshape(rois.shape[0], -1)
        d = offsets.reshape(offsets.shape[0], -1)[:, 4:8] * self.std.to(offsets) + self.mean.to(
            offsets
        )
        x1, y1, x2, y2 = rois[:, 1], rois[:, 2], rois[:, 3], rois[:, 4]
        pw, ph = x2 - x1 + 1, y2 - y1 + 1
        tw, th = pw * torch.exp(d[:, 2]), ph * torch.exp(d[:, 3])
        tx = d[:, 0] * pw + 0.5 * (x1 + x2) - (tw - 1) / 2
        ty = d[:, 1] * ph + 0.5 * (y1 + y2) - (th - 1) / 2
        rows = torch.stack([rois[:, 0], tx, ty, tx + tw - 1, ty + th - 1], 1)
        return rows.reshape(-1, 5, 1, 1)


@register("DecodeBBox", "torch")
def _decode_bbox(node: Node, ctx: TorchContext) -> nn.Module:
    return DecodeBBox(node)


def _jaccard(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """Cascade R-CNN's JaccardOverlap between every earlier box of ``a`` and later box of
    ``b`` (``[x1, y1, x2, y2]``)."""
    x1, y1, x2, y2 = a.unbind(1)
    u1, v1, u2, v2 = b.unbind(1)
    ix1, iy1 = torch.maximum(x1[:, None], u1[None]), torch.maximum(y1[:, None], v1[None])
    ix2, iy2 = torch.minimum(x2[:, None], u2[None]), torch.minimum(y2[:, None], v2[None])
    zero = torch.zeros_like(ix1)
    inter = torch.where((ix1 > ix2) | (iy1 >= iy2), zero, (ix2 - ix1 + 1) * (iy2 - iy1 + 1))
    bad, bad_later = (x2 < x1) | (y2 < y1), (u2 < u1) | (v2 < v1)
    area = torch.where(bad, torch.zeros_like(x1), (x2 - x1 + 1) * (y2 - y1 + 1))
    later = torch.where(bad_later, torch.zeros_like(u1), (u2 - u1 + 1) * (v2 - v1 + 1))
    if mode == "IOMU":
        union = torch.minimum(area[:, None], later[None])
    elif mode == "IOFU":
        union = area[:, None].expand_as(inter)  # the earlier (kept) box's area
    else:
        union = area[:, None] + later[None] - inter
    invalid = bad[:, None] | bad_later[None] | (union <= 0)
    return torch.where(invalid, zero, inter / torch.where(union > 0, union, torch.ones_like(union)))


class BoxGroupOutput(nn.Module):
    def __init__(self, node: Node) -> None:
        super().__init__()
        self.s: GroupSettings = group_settings(node.param)
        self.tops = len(node.outputs)

    def _candidates(self, maps: tuple[torch.Tensor, ...], image: int) -> torch.Tensor:
        s, rows = self.s, []
        for j, (prob, box) in enumerate(zip(maps[::2], maps[1::2])):
            (fw, fh), stride = s.fields[j], s.strides[j]
            groups, (height, width) = len(fw), prob.shape[2:]
            cells = height * width
            like = dict(dtype=box.dtype, device=box.device)
            score = 1 - prob[image * groups : (image + 1) * groups, 0].reshape(groups, cells)
            d = box[image * groups : (image + 1) * groups].reshape(groups, 4, cells)
            mean = torch.tensor(s.mean, **like)[None, :, None]
            d = d * torch.tensor(s.std, **like)[None, :, None] + mean
            dx, dy = d[:, 0].clamp(-s.xy, s.xy), d[:, 1].clamp(-s.xy, s.xy)
            dw, dh = d[:, 2].clamp(*s.wh), d[:, 3].clamp(*s.wh)
            cell = torch.arange(cells, device=box.device)
            cols, rows_ = (cell % width).to(box.dtype), (cell // width).to(box.dtype)
            fw_, fh_ = torch.tensor(fw, **like)[:, None], torch.tensor(fh, **like)[:, None]
            bw, bh = fw_ * torch.exp(dw), fh_ * torch.exp(dh)
            x1 = dx * fw_ + (cols + 0.5) * stride - bw / 2
            y1 = dy * fh_ + (rows_ + 0.5) * stride - bh / 2
            x2, y2 = x1 + bw - 1, y1 + bh - 1
            x1, y1 = x1.clamp(min=0), y1.clamp(min=0)
            x2, y2 = x2.clamp(max=width * stride), y2.clamp(max=height * stride)
            keep = (score >= s.fg_thr) & (x2 - x1 + 1 >= s.min_size) & (y2 - y1 + 1 >= s.min_size)
            rows.append(torch.stack([x1, y1, x2, y2, score], -1)[keep])
        return torch.cat(rows)

    def forward(self, *maps: torch.Tensor):
        s, found = self.s, []
        for image in range(maps[0].shape[0] // len(s.fields[0][0])):
            boxes = self._candidates(maps, image)
            boxes = boxes[torch.sort(-boxes[:, 4], stable=True).indices]
            if s.max_nms > 0:
                boxes = boxes[: s.max_nms]
            boxes = boxes[_nms(boxes[:, :4], _jaccard, s.iou_thr, s.mode, s.max_post)]
            found.append(torch.cat([torch.full_like(boxes[:, :1], image), boxes], 1))
        return box_tops(found, maps[0], self.tops)


@register("BoxGroupOutput", "torch")
def _box_group_output(node: Node, ctx: TorchContext) -> nn.Module:
    return BoxGroupOutput(node)
