"""The ONNX models handed to OpenCV: the net's own outputs only (fast: OpenCV fuses layers and
reuses buffers freely), and on demand the same model with every value as an output.

Every value must be a graph output before OpenCV 5 can return it: on 5.0.0 ``forward(name)`` of
an intermediate tensor returns another tensor's buffer (measured: ``forward("pool5")`` of the
Levi-Hassner net came back 1 x 8, the shape of prob), and ``forward([names])`` insists on every
graph output at once. Making all values outputs costs speed (no fusion; 33 ms -> 49 ms for the
res10 SSD detector on one CPU), so that model is built only when a blob inside the net is asked
for. Needs numpy, protobuf and onnx only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .names import NetNames

BATCH = "N"


@dataclass(frozen=True)
class Converted:
    onnx: bytes  # serialized ModelProto whose outputs are the net's outputs
    names: NetNames


def convert(prototxt: str | os.PathLike[str], weights: str | os.PathLike[str]) -> Converted:
    """Read the Caffe files (every check of ``load_net``) and export the net to ONNX."""
    from ..converters.onnx.export import to_onnx
    from ..ir.load import load_net

    loaded = load_net(prototxt, weights)
    graph = loaded.graph
    metadata = {
        "converter": "caffe_compat.dnn",
        "source_prototxt": Path(prototxt).name,
        "source_weights": Path(weights).name,
    }
    model = to_onnx(graph, metadata=metadata)
    return Converted(model.SerializeToString(), NetNames.from_graph(graph))


def with_every_value(onnx: bytes, names: NetNames) -> bytes:
    """The same model with every computed value as an extra output (batch axis dynamic)."""
    import onnx as onnx_lib
    from onnx import TensorProto, helper

    model = onnx_lib.load_from_string(onnx)
    present = {output.name for output in model.graph.output}
    for value, shape in names.shapes.items():
        if value not in present:
            dims: list[int | str] = [BATCH, *shape[1:]] if shape else []
            model.graph.output.append(helper.make_tensor_value_info(value, TensorProto.FLOAT, dims))
    return model.SerializeToString()
