"""The one in-memory form of a Caffe net that every back end reads.

Values are named in SSA form so that Caffe's in-place layers (top == bottom) become distinct
values: the version of a blob that Caffe would show after a full forward pass (the last writer's)
carries the plain blob name, earlier versions are named ``blob@layer`` after the layer producing
them. Graph inputs always keep their plain names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..proto import caffe_pb2

Shape = tuple[int, ...]


@dataclass
class Node:
    """One Caffe layer: its definition (V2 protobuf, defaults from caffe.proto), wiring, weights."""

    name: str
    type: str
    param: caffe_pb2.LayerParameter
    inputs: list[str]
    outputs: list[str]
    blobs: list[np.ndarray] = field(default_factory=list)
    line: int | None = None  # first line of the layer in its prototxt, for messages
    # What the layer keeps between runs of this net: a Python layer's user instance, set up
    # once as Caffe's Net::Init does (its ``self.blobs`` and attributes live on); never pickled.
    state: Any = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict:
        # Pickled as bytes: the generated message classes live in a module named by protoc.
        return {**self.__dict__, "param": self.param.SerializeToString(), "state": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.param = caffe_pb2.LayerParameter.FromString(state["param"])

    @property
    def bottoms(self) -> list[str]:
        return list(self.param.bottom)

    @property
    def tops(self) -> list[str]:
        return list(self.param.top)


@dataclass
class Graph:
    """A net ready for conversion: inputs, nodes in execution order, outputs and value shapes."""

    name: str
    inputs: dict[str, Shape]  # value name -> declared shape (batch first)
    nodes: list[Node]
    outputs: list[str]
    blob_of: dict[str, str] = field(default_factory=dict)  # value -> Caffe blob name
    final: dict[str, str] = field(default_factory=dict)  # Caffe blob name -> last value
    shapes: dict[str, Shape] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (layer, type) left out
    path: str | None = None  # the prototxt it came from
    notes: list[str] = field(default_factory=list)  # assumptions made while building
    training: bool = False  # built for training: losses, Accuracy, Silence and labels kept
    sources: dict[str, str] = field(default_factory=dict)  # input -> its data layer (training)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def producer(self, value: str) -> Node | None:
        for node in self.nodes:
            if value in node.outputs:
                return node
        return None

    def consumers(self, value: str) -> list[Node]:
        return [node for node in self.nodes if value in node.inputs]

    def resolve(self, name: str) -> str:
        """A value name from a Caffe blob name (its final version) or a value name itself."""
        if name in self.final:
            return self.final[name]
        if name in self.blob_of:
            return name
        raise KeyError(name)

    @property
    def values(self) -> list[str]:
        """Every value in execution order: inputs first, then each node's outputs."""
        out = list(self.inputs)
        for node in self.nodes:
            out.extend(node.outputs)
        return out

    @property
    def parameter_count(self) -> int:
        return sum(int(b.size) for node in self.nodes for b in node.blobs)
