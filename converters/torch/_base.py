"""What every PyTorch layer converter receives, and small helpers they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...ir.graph import Graph, Node, Shape


@dataclass(frozen=True)
class TorchContext:
    """Static facts about one node: the graph it lives in and its input and output shapes."""

    graph: Graph
    node: Node

    @property
    def in_shapes(self) -> list[Shape]:
        return [self.graph.shapes[v] for v in self.node.inputs]

    @property
    def out_shapes(self) -> list[Shape]:
        return [self.graph.shapes[v] for v in self.node.outputs]


def parameter(array: np.ndarray) -> torch.nn.Parameter:
    """An owned float32 parameter copied from a (possibly read-only) numpy blob."""
    return torch.nn.Parameter(
        torch.from_numpy(np.array(array, dtype=np.float32)), requires_grad=False
    )


def buffer(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


class PerBottom(torch.nn.Module):
    """Apply one layer to each of several bottoms (Caffe layers may share weights this way)."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.layer(x) for x in xs)
