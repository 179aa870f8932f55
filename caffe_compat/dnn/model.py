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
from typing import TYPE_CHECKING

from .names import NetNames

if TYPE_CHECKING:
    from ..ir.load import LoadedNet

BATCH = "N"


@dataclass(frozen=True)
class Converted:
    onnx: bytes  # serialized ModelProto whose outputs are the net's outputs
    names: NetNames


class WeightsPending(Exception):
    """The net has layers the weights file lacks (or no weights file at all): OpenCV's Caffe
    reader accepts that, and scripts set those layers' blobs before the first forward (the
    colorization sample's ``class8_ab``). Carries the net, its other weights attached."""

    def __init__(self, loaded: LoadedNet) -> None:
        super().__init__("layers without weights")
        self.loaded = loaded


def load_editable(
    prototxt: str | os.PathLike[str], weights: str | os.PathLike[str] | None
) -> LoadedNet:
    """The net with the weights it has (every check of ``load_net`` but one: layers absent from
    the weights file stay without blobs, to be set through ``.blobs`` or ``setParam``)."""
    from ..io import read_weights
    from ..ir.infer import check_weights, match_weights
    from ..ir.load import load_net

    loaded = load_net(prototxt)
    if weights is not None:
        loaded.weights = read_weights(weights)
        found = match_weights(loaded.graph, loaded.weights, loaded.inference)
        loaded.issues.extend(found)
        check_weights(loaded.graph, [i for i in found if i.kind != "missing"], str(weights))
    return loaded


def unset_layers(loaded: LoadedNet) -> list[str]:
    """The layers that need blobs and have none yet, in net order."""
    params = loaded.inference.params
    return [node.name for node in loaded.graph.nodes if params.get(node.name) and not node.blobs]


def export(loaded: LoadedNet, source: str) -> bytes:
    """The net's ONNX bytes (its outputs only); every layer must have its weights."""
    from ..converters.onnx.export import to_onnx

    metadata = {"converter": "caffe_compat.dnn", "source_prototxt": Path(source).name}
    return to_onnx(loaded.graph, metadata=metadata).SerializeToString()


def convert(prototxt: str | os.PathLike[str], weights: str | os.PathLike[str]) -> Converted:
    """Read the Caffe files (every check of ``load_net``) and export the net to ONNX; raises
    :class:`WeightsPending` when the weights file lacks layers."""
    loaded = load_editable(prototxt, weights)
    if unset_layers(loaded):
        raise WeightsPending(loaded)
    from ..converters.onnx.export import to_onnx

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
