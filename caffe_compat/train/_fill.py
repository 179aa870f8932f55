"""Starting values: parameter blobs from the layers' fillers, and the tops data layers draw.

Caffe draws from its own generator, so the values are not Caffe's, but the distributions are:
a blob's fillers come from its type's facts (``registry.describe(fillers=...)``), an unset
filler is Caffe's constant 0, and a type without fillers (BatchNorm's statistics) starts at 0;
a Python layer's blobs start as its ``setup`` left them, as in Caffe.
A data layer that draws its tops (DummyData, its ``top_fillers`` fact) fills a constant top once
and refills any other on every forward (dummy_data_layer.cpp), so a constant top written from
Python keeps its values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import registry
from ..ir.graph import Graph, Node, Shape
from ..ir.phase import NetState, layer_included
from ..proto import caffe_pb2
from ..tools.fillers import fill

FillerParameter = caffe_pb2.FillerParameter


def initial_blobs(node: Node, shapes: list[Shape], rng: np.random.Generator) -> list[np.ndarray]:
    """One float32 array per parameter blob, as the layer's fillers would start it; a layer
    whose set-up instance holds its blobs (a Python layer's ``setup``) starts from them."""
    held = getattr(node.state, "blobs", None)
    if held is not None and [tuple(b.shape) for b in held] == [tuple(s) for s in shapes]:
        return [np.array(b.data, np.float32) for b in held]
    facts = registry.facts(node.type)
    fillers = facts.fillers(node.param) if facts.fillers is not None else []
    blobs = []
    for index, shape in enumerate(shapes):
        shape = tuple(int(d) for d in shape)
        if index < len(fillers):
            blobs.append(fill(fillers[index], shape, rng))
        else:
            blobs.append(np.zeros(shape, np.float32))
    return blobs


def fill_tensor(
    filler: FillerParameter, shape: Shape, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """A tensor drawn as ``filler`` draws (on the device for constant, uniform and gaussian)."""
    kind = filler.type
    if kind == "constant":
        return torch.full(shape, float(filler.value), device=device)
    if kind == "uniform":
        low, high = float(filler.min), float(filler.max)
        return torch.rand(shape, generator=generator, device=device) * (high - low) + low
    if kind == "gaussian" and filler.sparse < 0:
        noise = torch.randn(shape, generator=generator, device=device)
        return noise * float(filler.std) + float(filler.mean)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    return torch.from_numpy(fill(filler, tuple(shape), np.random.default_rng(seed))).to(device)


@dataclass
class DrawnTops:
    """The tops a net's data layers draw themselves (DummyData): each top's filler."""

    fillers: dict[str, FillerParameter] = field(default_factory=dict)
    shapes: dict[str, Shape] = field(default_factory=dict)
    _once: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def tops(self) -> set[str]:
        return set(self.fillers)

    @classmethod
    def for_graph(cls, graph: Graph, net: caffe_pb2.NetParameter, state: NetState) -> DrawnTops:
        found = cls()
        for layer in net.layer:
            fillers = registry.facts(layer.type).top_fillers
            if fillers is None or not layer_included(state, layer):
                continue
            for top, filler in zip(layer.top, fillers(layer)):
                found.fillers[top] = filler
                found.shapes[top] = tuple(graph.inputs[top])
        return found

    def fill(self, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
        """This forward's tops: constant ones as first filled (or as written since), the others
        drawn anew."""
        tops = {}
        for top, filler in self.fillers.items():
            if filler.type == "constant":
                if top not in self._once:
                    self._once[top] = fill_tensor(filler, self.shapes[top], generator, device)
                tops[top] = self._once[top]
            else:
                tops[top] = fill_tensor(filler, self.shapes[top], generator, device)
        return tops
