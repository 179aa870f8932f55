"""Embed: bottom values (integers stored as floats) pick rows of the K x N table, plus bias."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CaffeCompatError
from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ._base import TorchContext, parameter


class Embed(nn.Module):
    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, name: str = "") -> None:
        super().__init__()
        self.weight = parameter(weight)
        self.register_parameter("bias", None if bias is None else parameter(bias))
        self.name = name
        self.blob_slots = ("weight", "bias") if bias is not None else ("weight",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()  # Caffe truncates each value to int
        if not torch.compiler.is_compiling():  # eager: a clear error, not an IndexError
            rows = self.weight.shape[0]
            outside = (ids < 0) | (ids >= rows)
            if bool(outside.any()):
                raise CaffeCompatError(
                    f"its bottom holds {int(outside.sum())} value(s) outside the table's rows "
                    f"0..{rows - 1} (e.g. {float(x[outside][0]):g}): Embed reads row indices",
                    layer=self.name or None,
                    layer_type="Embed",
                )
        y = F.embedding(ids, self.weight)
        return y if self.bias is None else y + self.bias


@register("Embed", "torch")
def _embed(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    bias = node.blobs[1] if node.param.embed_param.bias_term else None
    return Embed(node.blobs[0], bias, node.name)
