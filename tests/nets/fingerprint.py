"""A fingerprint of a deploy net's layers, to check the zoo's own prototxts against the released
ones without keeping the released files in the repository.

One line per layer (the Input layer and the declared input batch size aside): name, type, bottoms,
tops, learned parameter shapes, output shapes at batch 1, and the layer's settings with what only
training reads (``param`` specs, weight/bias/scale fillers) removed. Two files with the same
fingerprint have the same layers in the same order, wired the same way, with the same settings and
shapes, so the same caffemodel loads into both by name and computes the same thing.

Run ``python tests/nets/fingerprint.py RELEASED_DEPLOY.prototxt`` to print a released file's layer
count and SHA-256 (the numbers tests/zoo/test_zoo_prototxts.py records for each zoo model).
"""

from __future__ import annotations

import hashlib
import os
import sys

from google.protobuf import text_format

from caffe_compat.ir.load import load_net
from caffe_compat.proto import caffe_pb2

_FILLERS = ("weight_filler", "bias_filler", "scale_filler", "filler")


def _settings(layer: caffe_pb2.LayerParameter) -> str:
    copy = caffe_pb2.LayerParameter()
    copy.CopyFrom(layer)
    for field in ("name", "type", "bottom", "top", "param"):
        copy.ClearField(field)
    for descriptor, message in copy.ListFields():
        if descriptor.message_type is None or descriptor.is_repeated:
            continue
        for filler in _FILLERS:
            if filler in message.DESCRIPTOR.fields_by_name:
                message.ClearField(filler)
    return text_format.MessageToString(copy, as_one_line=True)


def layer_lines(path: str | os.PathLike[str]) -> list[str]:
    """The canonical line of every non-Input layer, in order (see the module docstring)."""
    first = load_net(path, allow_unknown_fields=True)
    batch_one = {name: (1, *shape[1:]) for name, shape in first.graph.inputs.items()}
    loaded = load_net(path, input_shapes=batch_one, allow_unknown_fields=True)
    graph, params = loaded.graph, loaded.inference.params
    lines = []
    for node in graph.nodes:
        if node.type == "Input":
            continue
        tops = [list(graph.shapes.get(value, ())) for value in node.outputs]
        learned = [list(shape) for shape in params.get(node.name, [])]
        lines.append(
            f"{node.name}|{node.type}|{','.join(node.bottoms)}|{','.join(node.tops)}|"
            f"{learned}|{tops}|{_settings(node.param)}"
        )
    return lines


def fingerprint(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(number of layers, SHA-256 of their canonical lines)."""
    lines = layer_lines(path)
    return len(lines), hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        count, digest = fingerprint(arg)
        print(f"{arg}: {count} layers, sha256 {digest}")
