"""CTCGreedyDecoder in PyTorch (caffe_ocr; see caffe_compat.shapes.ctc): argmax per step, a keep
mask, and the kept labels gathered to the front by sorting ``t`` (kept) or ``T + t`` (dropped)."""

from __future__ import annotations

import torch
from torch import nn

from ...ir.graph import Node
from ...registry import register
from ._base import TorchContext


class CTCGreedyDecoder(nn.Module):
    def __init__(self, node: Node) -> None:
        super().__init__()
        p = node.param.ctc_decoder_param
        self.blank, self.merge = int(p.blank_index), bool(p.ctc_merge_repeated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, n, c = x.shape[:3]
        best = x.reshape(t, n, c).argmax(dim=2).transpose(0, 1)  # (N, T)
        blank = c - 1 if self.blank < 0 else self.blank
        keep = best != blank
        if self.merge:
            previous = torch.cat([torch.full_like(best[:, :1], -1), best[:, :-1]], dim=1)
            keep = keep & (best != previous)
        steps = torch.arange(t, device=x.device).expand(n, t)
        order = torch.where(keep, steps, steps + t).argsort(dim=1)
        labels = torch.where(keep, best, torch.full_like(best, -1)).gather(1, order)
        return labels.to(x.dtype).reshape(n, t, 1, 1)


@register("CTCGreedyDecoder", "torch")
def _ctc_greedy(node: Node, ctx: TorchContext) -> nn.Module:
    return CTCGreedyDecoder(node)
