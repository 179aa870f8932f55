"""Yolov3DetectionOutput in PyTorch (see caffe_compat.shapes.yolo): every map decoded at once,
candidates in the fork's loop order, a stable sort by score and the class-agnostic greedy NMS,
a block of boxes at a time, each block the fixed point over its overlap matrix
(``_base.greedy_nms``, with the fork's ``>=`` and centre-size overlaps)."""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.yolo import yolo2_settings, yolo_settings
from ._base import TorchContext, greedy_nms


def _kept(boxes: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices greedy NMS keeps, settled a block at a time (``greedy_nms``): an untrained
    YOLOv3's tens of thousands of candidates never make one count x count overlap matrix
    (3.7 GB measured)."""
    cx, cy, w, h = boxes.unbind(1)
    area = w * h

    def suppresses(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        def overlap(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            high = torch.minimum((c[a] + s[a] / 2)[:, None], (c[b] + s[b] / 2)[None])
            return high - torch.maximum((c[a] - s[a] / 2)[:, None], (c[b] - s[b] / 2)[None])

        ow, oh = overlap(cx, w), overlap(cy, h)
        inter = torch.where((ow < 0) | (oh < 0), torch.zeros_like(ow), ow * oh)
        iou = inter / (area[a][:, None] + area[b][None] - inter)
        return iou >= threshold

    return greedy_nms(boxes.shape[0], suppresses).to(boxes.device)


class Yolov3DetectionOutput(nn.Module):
    def __init__(self, node: Node) -> None:
        super().__init__()
        self.s = yolo_settings(node.param.yolov3_detection_output_param)

    def _candidates(self, t: int, x: torch.Tensor) -> torch.Tensor:
        s = self.s
        b, _, side, _ = x.shape
        v = x.reshape(b, s.boxes, 5 + s.classes, side * side).permute(0, 3, 1, 2)
        cell = torch.arange(side * side, device=x.device)
        i, j = (cell % side)[None, :, None], (cell // side)[None, :, None]
        anchors = torch.tensor([s.anchor(t, n) for n in range(s.boxes)], dtype=x.dtype)
        size = float(side * s.scales[t])
        cx = (i + torch.sigmoid(v[..., 0])) / side
        cy = (j + torch.sigmoid(v[..., 1])) / side
        w = torch.exp(v[..., 2]) * anchors[:, 0].to(x.device) / size
        h = torch.exp(v[..., 3]) * anchors[:, 1].to(x.device) / size
        score = torch.sigmoid(v[..., 5:]) * torch.sigmoid(v[..., 4])[..., None]
        boxes = torch.stack([cx, cy, w, h], -1)[..., None, :].expand(*score.shape, 4)
        label = torch.arange(s.classes, device=x.device, dtype=x.dtype).expand(score.shape)
        keep = score > s.threshold
        return torch.cat([label[keep][:, None], score[keep][:, None], boxes[keep]], 1)

    def forward(self, *maps: torch.Tensor) -> torch.Tensor:
        found = torch.cat([self._candidates(t, x) for t, x in enumerate(maps)])
        return finish(found, self.s.nms, maps[-1])


def finish(found: torch.Tensor, threshold: float, like: torch.Tensor) -> torch.Tensor:
    """Candidates ``[class, score, x, y, w, h]`` in loop order -> the fork's top rows."""
    found = found[torch.sort(-found[:, 1], stable=True).indices]
    kept = found[_kept(found[:, 2:], threshold)]
    if kept.shape[0] == 0:
        batch = like.shape[0]
        rows = torch.full((batch, 7), -1.0, dtype=like.dtype, device=like.device)
        rows[:, 0] = torch.arange(batch, dtype=rows.dtype, device=rows.device)
        return rows.reshape(1, 1, batch, 7)
    x, y, w, h = kept[:, 2:].unbind(1)
    columns = [torch.zeros_like(x), kept[:, 0] + 1, kept[:, 1]]
    columns += [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
    return torch.stack(columns, 1).reshape(1, 1, -1, 7)


class YoloDetectionOutput(nn.Module):
    """v2: one candidate per box, the first most probable class of a softmax."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.s = yolo2_settings(node.param.yolo_detection_output_param)

    def forward(self, *maps: torch.Tensor) -> torch.Tensor:
        found = torch.cat([self._candidates(x) for x in maps])  # the first map's first
        return finish(found, self.s.nms, maps[0])

    def _candidates(self, x: torch.Tensor) -> torch.Tensor:
        s = self.s
        b, _, side, _ = x.shape
        v = x.reshape(b, s.boxes, 5 + s.classes, side * side).permute(0, 3, 1, 2)
        cell = torch.arange(side * side, device=x.device)
        i, j = (cell % side)[None, :, None], (cell // side)[None, :, None]
        anchors = torch.tensor([s.anchor(0, n) for n in range(s.boxes)], dtype=x.dtype).to(x.device)
        prob = torch.softmax(v[..., 5:], dim=-1)
        best, label = prob.max(dim=-1)
        score = torch.sigmoid(v[..., 4]) * best
        cx = (i + torch.sigmoid(v[..., 0])) / side
        cy = (j + torch.sigmoid(v[..., 1])) / side
        w = torch.exp(v[..., 2]) * anchors[:, 0] / side
        h = torch.exp(v[..., 3]) * anchors[:, 1] / side
        keep = score >= s.threshold
        columns = [label.to(x.dtype), score, cx.expand_as(score), cy.expand_as(score), w, h]
        return torch.stack([c[keep] for c in columns], 1)


@register("YoloDetectionOutput", "torch")
def _yolo2(node: Node, ctx: TorchContext) -> nn.Module:
    return YoloDetectionOutput(node)


@register("Yolov3DetectionOutput", "torch")
def _yolov3(node: Node, ctx: TorchContext) -> nn.Module:
    return Yolov3DetectionOutput(node)
