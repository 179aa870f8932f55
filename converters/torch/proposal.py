"""Proposal in PyTorch (py-faster-rcnn's RPN proposal layer; see caffe_compat.shapes.proposal).

Everything is batched over the anchors. The greedy NMS is the fixed point of "a box stays
unless a kept box before it overlaps it by more than the threshold", computed on the whole
overlap matrix at once and iterated until nothing changes: each round settles at least the next
box of the score order, in practice a handful of rounds (the length of the longest chain of
suppressions), never one round per box.
"""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ...shapes.proposal import proposal_settings
from ._base import TorchContext, greedy_nms


def suppress(boxes: torch.Tensor, thresh: float, most: int = 0) -> torch.Tensor:
    """Greedy NMS on boxes in score order (+1 areas, suppress above ``thresh``): the indices
    kept, a block of boxes at a time (``greedy_nms``: no count x count matrix for a net
    without ``pre_nms_topn``), stopping once ``most`` (> 0) are kept."""
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)

    def suppresses(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        def side(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
            top = torch.minimum(high[a][:, None], high[b][None])
            return (top - torch.maximum(low[a][:, None], low[b][None]) + 1).clamp(min=0)

        inter = side(x1, x2) * side(y1, y2)
        return inter / (areas[a][:, None] + areas[b][None] - inter) > thresh

    return greedy_nms(boxes.shape[0], suppresses, most).to(boxes.device)


class Proposal(nn.Module):
    def __init__(self, node: Node) -> None:
        super().__init__()
        self.s = proposal_settings(node.param.proposal_param)
        self.register_buffer("anchors", torch.from_numpy(self.s.anchors.copy()), persistent=False)
        self.tops = len(node.outputs)

    def forward(self, scores: torch.Tensor, deltas: torch.Tensor, info: torch.Tensor):
        s, a = self.s, self.anchors.shape[0]
        fg = scores[0, a:]
        h, w = fg.shape[1:]
        dev = scores.device
        ys = torch.arange(h, device=dev, dtype=torch.float64) * s.feat_stride
        xs = torch.arange(w, device=dev, dtype=torch.float64) * s.feat_stride
        sy, sx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([sx, sy, sx, sy], -1).reshape(-1, 1, 4)
        anchors = (self.anchors.to(dev)[None] + shifts).reshape(-1, 4)
        # float64 from here, as the original's numpy (float64 anchors times float32 deltas)
        d = deltas[0].double().reshape(a, 4, h, w).permute(2, 3, 0, 1).reshape(-1, 4)
        score = fg.permute(1, 2, 0).reshape(-1)
        widths = anchors[:, 2] - anchors[:, 0] + 1
        heights = anchors[:, 3] - anchors[:, 1] + 1
        cx, cy = anchors[:, 0] + 0.5 * widths, anchors[:, 1] + 0.5 * heights
        px, py = d[:, 0] * widths + cx, d[:, 1] * heights + cy
        pw, ph = torch.exp(d[:, 2]) * widths, torch.exp(d[:, 3]) * heights
        info = info.reshape(-1).double()
        zero = torch.zeros((), dtype=torch.float64, device=dev)
        x1 = torch.minimum(torch.maximum(px - 0.5 * pw, zero), info[1] - 1)
        y1 = torch.minimum(torch.maximum(py - 0.5 * ph, zero), info[0] - 1)
        x2 = torch.minimum(torch.maximum(px + 0.5 * pw, zero), info[1] - 1)
        y2 = torch.minimum(torch.maximum(py + 0.5 * ph, zero), info[0] - 1)
        boxes = torch.stack([x1, y1, x2, y2], 1)
        least = s.min_size * info[2]
        big = ((x2 - x1 + 1) >= least) & ((y2 - y1 + 1) >= least)
        boxes, score = boxes[big], score[big]
        order = torch.sort(-score, stable=True).indices
        if s.pre_nms_topn > 0:
            order = order[: s.pre_nms_topn]
        boxes, score = boxes[order], score[order]
        if s.nms_thresh < 1:
            keep = suppress(boxes, s.nms_thresh, max(s.post_nms_topn, 0))
        else:  # an overlap never exceeds 1: no NMS (SSH's test phase)
            keep = torch.arange(boxes.shape[0], device=boxes.device)
        if s.post_nms_topn > 0:
            keep = keep[: s.post_nms_topn]
        rois = torch.cat([torch.zeros_like(boxes[keep][:, :1]), boxes[keep]], 1).to(scores.dtype)
        return (rois, score[keep].reshape(-1, 1)) if self.tops == 2 else rois


@register("Proposal", "torch")
def _proposal(node: Node, ctx: TorchContext) -> nn.Module:
    return Proposal(node)
