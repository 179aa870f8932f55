"""What every PyTorch layer converter receives, and small helpers they share.

A module that holds a layer's blobs names them in ``blob_slots``: for Caffe blob i, the
attribute (dotted through submodules) holding it in Caffe's own shape. The training engine
replaces those tensors with its parameters, so a blob shared by several layers (``param { name:
}``) is one tensor, and autograd's diffs land in Caffe's layout.
"""

from __future__ import annotations

from collections.abc import Callable
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


def bind_blobs(module: torch.nn.Module, tensors: list[torch.Tensor]) -> None:
    """Put ``tensors`` (Caffe blob order, Caffe shapes) into the slots ``module.blob_slots``
    names, as parameters of the module (a frozen one may be a plain tensor)."""
    slots = getattr(module, "blob_slots", None)
    if slots is None or len(slots) != len(tensors):
        raise ValueError(f"{type(module).__name__} does not name its {len(tensors)} blob(s)")
    for path, tensor in zip(slots, tensors):
        owner_path, _, name = path.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        owner._buffers.pop(name, None)
        owner._parameters.pop(name, None)
        if isinstance(tensor, torch.nn.Parameter):
            owner._parameters[name] = tensor
        else:
            owner.register_buffer(name, tensor, persistent=False)


def greedy_keep(suppresses: torch.Tensor, alive: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy NMS's keep mask for boxes in score order, from ``suppresses[i, j]`` (box i would
    suppress box j: their overlap passes the layer's test). Only an earlier box counts, and only
    if it is kept itself: iterated to the fixed point, which is the greedy loop's answer (each
    pass settles at least one more box in order) without a Python loop over boxes. ``alive``
    (default: all) marks the boxes not already suppressed by earlier ones outside the matrix:
    the others are never kept and suppress nothing."""
    count = suppresses.shape[0]
    earlier = torch.ones(count, count, dtype=torch.bool, device=suppresses.device).triu(1)
    beats = suppresses & earlier
    if alive is None:
        alive = torch.ones(count, dtype=torch.bool, device=suppresses.device)
    keep = alive
    while True:
        new = alive & ~(beats & keep[:, None]).any(0)
        if bool((new == keep).all()):
            return keep
        keep = new


NMS_BLOCK = 512  # boxes settled at a time by ``greedy_nms``


def greedy_nms(
    count: int,
    suppresses: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    most: int = 0,
    block: int = NMS_BLOCK,
) -> torch.Tensor:
    """Indices, in order, of the boxes greedy NMS keeps among ``count`` boxes in score order;
    ``suppresses(earlier, later)`` (index tensors) gives the (earlier x later) matrix of "box i
    would suppress box j". The boxes are settled ``block`` at a time: each block's overlaps
    with the boxes kept so far, then ``greedy_keep`` inside it, so the work is (kept + block)
    x count, never count x count at once; with ``most`` > 0 it stops once ``most`` are kept
    (the greedy loop's first ``most`` do not depend on later boxes)."""
    kept = torch.zeros(0, dtype=torch.long)
    for start in range(0, count, block):
        cols = torch.arange(start, min(count, start + block))
        alive = None
        if kept.numel():
            alive = ~suppresses(kept, cols).any(0)
        kept = torch.cat([kept, cols[greedy_keep(suppresses(cols, cols), alive)]])
        if most > 0 and kept.numel() >= most:
            return kept[:most]
    return kept
