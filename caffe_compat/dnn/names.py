"""What the converted net must answer to by name, kept beside the cached ONNX so a cache hit needs
neither the prototxt nor the weights parsed again.

OpenCV 4's Caffe reader names everything by Caffe layer: ``getLayerNames()`` lists the layers
(inputs excluded) in prototxt order, ``forward("conv1")`` returns layer conv1's own output (before
an in-place ReLU that follows it: measured on 4.14, where ``forward("conv1")`` has negative values
and ``forward("relu1")`` has none) and ``forward()`` returns the last layer's output. Our ONNX
names values by Caffe blob instead (the final version of a blob by its name, earlier versions
``blob@layer``). :meth:`NetNames.resolve` maps OpenCV's names onto those values: a layer name
first (OpenCV 4's answer), then a blob name (its value after every in-place layer, as Caffe's
``net.blobs[name]`` holds after a forward pass), then a value name as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..ir.graph import Graph


@dataclass(frozen=True)
class NetNames:
    inputs: tuple[str, ...]
    layers: tuple[str, ...]  # Caffe layer names in execution order, as getLayerNames() lists them
    layer_tops: Mapping[str, tuple[str, ...]]  # layer -> the values it writes, top by top
    blob_value: Mapping[str, str]  # Caffe blob -> its final value
    outputs: tuple[str, ...]  # the net's outputs: the values the lean ONNX model returns
    shapes: Mapping[str, tuple[int, ...]]  # every computed value (execution order) -> its shape

    @classmethod
    def from_graph(cls, graph: Graph) -> NetNames:
        inputs = tuple(graph.inputs)
        return cls(
            inputs=inputs,
            layers=tuple(node.name for node in graph.nodes),
            layer_tops={node.name: tuple(node.outputs) for node in graph.nodes},
            blob_value={b: v for b, v in graph.final.items() if v not in graph.inputs},
            outputs=tuple(graph.outputs),
            shapes={v: tuple(graph.shapes[v]) for v in graph.values if v not in graph.inputs},
        )

    @property
    def default_value(self) -> str:
        """What ``forward()`` returns: the last layer's output, as in OpenCV."""
        for layer in reversed(self.layers):
            if self.layer_tops.get(layer):
                return self.layer_tops[layer][0]
        return self.outputs[0]

    def resolve(self, name: str) -> str | None:
        """The value OpenCV's ``forward(name)`` means (a layer's first top), or None."""
        if self.layer_tops.get(name):
            return self.layer_tops[name][0]
        if name in self.blob_value:
            return self.blob_value[name]
        return name if name in self.shapes else None

    def unconnected_layers(self) -> list[str]:
        """The layers that produce the net's outputs, in layer order."""
        wanted = set(self.outputs)
        return [layer for layer in self.layers if wanted & set(self.layer_tops.get(layer, ()))]

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": list(self.inputs),
            "layers": list(self.layers),
            "layer_tops": {k: list(v) for k, v in self.layer_tops.items()},
            "blob_value": dict(self.blob_value),
            "outputs": list(self.outputs),
            "shapes": [[v, list(s)] for v, s in self.shapes.items()],
        }

    @classmethod
    def from_json(cls, data: Any) -> NetNames:
        """Rebuild from :meth:`to_json`; ValueError when anything is missing or mistyped."""
        try:
            names = cls(
                inputs=_strings(data["inputs"]),
                layers=_strings(data["layers"]),
                layer_tops={str(k): _strings(v) for k, v in _mapping(data["layer_tops"]).items()},
                blob_value=_string_map(data["blob_value"]),
                outputs=_strings(data["outputs"]),
                shapes={str(v): _dims(s) for v, s in data["shapes"]},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed net names: {exc}") from None
        if not names.outputs or not set(names.outputs) <= set(names.shapes):
            raise ValueError("malformed net names: outputs without shapes")
        return names


def _strings(items: Any) -> tuple[str, ...]:
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a list of strings")
    return tuple(items)


def _dims(items: Any) -> tuple[int, ...]:
    """A shape: at most 32 whole, non-negative sizes that fit an ONNX (int64) dimension."""
    if not isinstance(items, list) or len(items) > 32:
        raise ValueError("a shape is not a list of at most 32 sizes")
    if not all(type(d) is int and 0 <= d < 2**63 for d in items):
        raise ValueError("a shape holds something else than sizes")
    return tuple(items)


def _mapping(items: Any) -> dict[str, Any]:
    if not isinstance(items, dict):
        raise ValueError("expected a mapping")
    return items


def _string_map(items: Any) -> dict[str, str]:
    if not all(isinstance(v, str) for v in _mapping(items).values()):
        raise ValueError("expected a mapping of strings")
    return dict(items)
