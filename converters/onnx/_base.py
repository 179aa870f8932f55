"""What every ONNX layer converter receives and returns, and helpers to build nodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

from ...ir.graph import Graph, Node, Shape


class OnnxOut(NamedTuple):
    """A converter's result: ONNX nodes (in order) and the initializers they use."""

    nodes: list[NodeProto]
    initializers: Sequence[TensorProto] = ()


@dataclass(frozen=True)
class OnnxContext:
    """Names and static shapes for one Caffe layer being converted (converters never mutate it)."""

    graph: Graph
    node: Node
    opset: int

    @property
    def inputs(self) -> list[str]:
        return list(self.node.inputs)

    @property
    def outputs(self) -> list[str]:
        return list(self.node.outputs)

    @property
    def in_shapes(self) -> list[Shape]:
        return [self.graph.shapes[v] for v in self.node.inputs]

    @property
    def out_shapes(self) -> list[Shape]:
        return [self.graph.shapes[v] for v in self.node.outputs]

    def name(self, suffix: str) -> str:
        """A graph-unique name for an intermediate value or node of this layer."""
        return f"{self.node.name}/{suffix}"

    def tensor(self, suffix: str, array: Any, dtype: Any = np.float32) -> TensorProto:
        """An initializer named after this layer."""
        return numpy_helper.from_array(np.asarray(array, dtype=dtype), self.name(suffix))

    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        suffix: str | None = None,
        **attrs: Any,
    ) -> NodeProto:
        """One ONNX node named after this layer (``suffix`` distinguishes several)."""
        name = self.node.name if suffix is None else self.name(suffix)
        return helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs)
