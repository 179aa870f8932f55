"""Graph -> ONNX model: one walk over the nodes, each converted by its registered function."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import onnx
from onnx import TensorProto, helper

from ... import __version__, registry
from ...errors import CaffeCompatError
from ...io.atomic import atomic_output
from ...ir.graph import Graph, Shape
from ...shapes.activations import SAMPLING_SWITCH
from . import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from ._base import OnnxContext, OnnxOut

__all__ = [
    "DEFAULT_OPSET",
    "MAX_OPSET",
    "MIN_OPSET",
    "check_model",
    "save_onnx",
    "to_onnx",
    "to_onnx_bytes",
]

MAX_PROTOBUF_BYTES = 2**31 - 2**24  # protobuf's 2 GiB message limit, less room for the graph
BATCH = "N"


def _value_info(name: str, shape: Shape, dynamic_batch: bool) -> onnx.ValueInfoProto:
    dims: list[int | str] = list(shape)
    if dynamic_batch and dims:
        dims[0] = BATCH
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def to_onnx(
    graph: Graph,
    *,
    opset: int = DEFAULT_OPSET,
    extra_outputs: Iterable[str] = (),
    metadata: Mapping[str, str] | None = None,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Build the ONNX model of a graph whose weights are attached.

    ``extra_outputs`` adds intermediate blobs (Caffe names, or ``blob@layer`` values) as outputs,
    which ``verify`` uses to compare every layer.
    """
    model, initializers = _parts(graph, opset, extra_outputs, metadata, dynamic_batch)
    # Moved in one at a time, each dropped once copied: make_graph's initializer list and
    # make_model's CopyFrom would hold the weights two and three times over at once.
    initializers.reverse()
    while initializers:
        model.graph.initializer.append(initializers.pop())
    return model


SKELETON_INLINE_BYTES = 4096  # initializers the check keeps with their data


def to_onnx_bytes(
    graph: Graph,
    *,
    opset: int = DEFAULT_OPSET,
    extra_outputs: Iterable[str] = (),
    metadata: Mapping[str, str] | None = None,
    dynamic_batch: bool = True,
    check: bool = True,
) -> bytes:
    """The serialised model of ``_onnx_pieces`` (its docstring), joined."""
    return b"".join(_onnx_pieces(graph, opset, extra_outputs, metadata, dynamic_batch, check=check))


# Tensors this large or larger go to the external data file; smaller ones (shape and index
# constants, which shape inference must read from the model itself) stay inline.
EXTERNAL_MIN_BYTES = 1 << 16


def write_onnx_streamed(
    graph: Graph,
    path: str | os.PathLike[str],
    *,
    extra_outputs: Iterable[str] = (),
    check: bool = True,
    external: str | None = None,
) -> None:
    """``to_onnx_bytes``'s model written to ``path`` piece by piece: no joined copy of the
    weights is ever held (ONNX Runtime then reads the file itself). ``external``: a file name
    beside ``path`` that receives the raw bytes of every large initializer (ONNX external
    data, ``EXTERNAL_MIN_BYTES``), so a
    runtime reads each tensor straight into its own memory, never parsing the whole weights
    into a protobuf first."""
    with open(path, "wb") as out, contextlib.ExitStack() as stack:
        beside = None
        if external:
            beside = (external, stack.enter_context(open(Path(path).parent / external, "wb")))
        pieces = _onnx_pieces(
            graph, DEFAULT_OPSET, extra_outputs, None, True, check=check, external=beside
        )
        for piece in pieces:
            out.write(piece)


def _onnx_pieces(
    graph: Graph,
    opset: int,
    extra_outputs: Iterable[str],
    metadata: Mapping[str, str] | None,
    dynamic_batch: bool,
    *,
    check: bool,
    external: tuple[str, BinaryIO] | None = None,
) -> Iterator[bytes]:
    """``to_onnx``'s model, checked (``check_model``, unless ``check`` is False) and
    serialised in pieces, holding the weights at most twice at once (the tensors not yet
    serialised and the pieces; joined bytes or a file are the caller's), where the model
    object and its serialisation would hold them four times (the protobuf, protobuf's buffer,
    the bytes, the checker's parsed copy): a big net's conversion fits in a small address
    space.

    The model without weights is serialised first, then each initializer as its own ``graph``
    field holding one ``initializer``: protobuf merges repeated occurrences of a message field,
    so every reader parses the same model. The checker runs on the model with each large
    initializer declared as a graph input of its type and shape, and the small ones (shape
    and size operands: Reshape's shape, Resize's sizes, up to SKELETON_INLINE_BYTES) kept with
    their values, so the full check's strict shape inference sees the same graph."""
    from ...io.wire import LEN, write_key, write_varint

    model, initializers = _parts(graph, opset, extra_outputs, metadata, dynamic_batch)
    if check:
        skeleton = onnx.ModelProto()
        skeleton.CopyFrom(model)
        declared = {value.name for value in skeleton.graph.input}
        for tensor in initializers:
            if tensor.ByteSize() <= SKELETON_INLINE_BYTES:
                skeleton.graph.initializer.append(tensor)  # shape operands keep their values
            elif tensor.name not in declared:
                skeleton.graph.input.append(
                    helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
                )
        check_model(skeleton)
        del skeleton
    yield model.SerializeToString()
    initializers.reverse()
    while initializers:
        # The tensor's raw bytes are written after the rest of it (protobuf reads fields in
        # any order): serialising the whole message would build it once in protobuf's buffer
        # and once more as Python bytes, two copies of the largest weight at once.
        tensor = initializers.pop()
        data = tensor.raw_data
        tensor.ClearField("raw_data")
        if external is not None and len(data) >= EXTERNAL_MIN_BYTES:
            name, stream = external
            offset = stream.tell()
            stream.write(data)
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", name), ("offset", offset), ("length", len(data))):
                tensor.external_data.add(key=key, value=str(value))
            data = b""
        head = tensor.SerializeToString()
        del tensor
        field = write_key(9, LEN) + write_varint(len(data)) if data else b""  # raw_data
        size = len(head) + len(field) + len(data)
        inner = write_key(5, LEN) + write_varint(size)  # GraphProto.initializer
        yield write_key(7, LEN) + write_varint(len(inner) + size) + inner  # ModelProto.graph
        yield head
        if data:
            yield field
            yield data
        del data


def _parts(
    graph: Graph,
    opset: int,
    extra_outputs: Iterable[str],
    metadata: Mapping[str, str] | None,
    dynamic_batch: bool,
) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """The model without its initializers, and the initializers, each its own message."""
    if graph.training:
        raise CaffeCompatError(
            "not needed: ONNX export is for inference, and this graph was built for training "
            "(losses, Accuracy and labels); export the net built without training=True",
            path=graph.path,
        )
    registry.preflight(graph, ["onnx"])
    weights = sum(int(blob.size) * 4 for node in graph.nodes for blob in node.blobs)
    if weights > MAX_PROTOBUF_BYTES:
        raise CaffeCompatError(
            f"the ONNX model would hold {weights / 2**30:.1f} GiB of weights; one ONNX protobuf "
            "holds at most 2 GiB (weights in external data files are not written)",
            path=graph.path,
        )
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    switches: set[str] = set()  # run-time switches: an initializer that is also a graph input
    for node in graph.nodes:
        entry = registry.lookup(node.type, "onnx")
        assert entry is not None  # preflight checked
        try:
            result: OnnxOut = entry.fn(node, OnnxContext(graph, node, opset))
        except CaffeCompatError:
            raise
        except ValueError as exc:
            raise CaffeCompatError(
                str(exc), path=graph.path, layer=node.name, layer_type=node.type
            ) from None
        nodes.extend(result.nodes)
        initializers.extend(i for i in result.initializers if i.name not in switches)
        switches.update(i.name for i in result.initializers if i.name == SAMPLING_SWITCH)
    outputs = list(graph.outputs)
    for name in extra_outputs:
        value = graph.resolve(name)
        if value not in outputs:
            outputs.append(value)
    onnx_graph = helper.make_graph(
        nodes,
        graph.name or "caffe_net",
        [_value_info(n, s, dynamic_batch) for n, s in graph.inputs.items()]
        + [helper.make_tensor_value_info(n, TensorProto.BOOL, []) for n in sorted(switches)],
        [_value_info(v, graph.shapes[v], dynamic_batch) for v in outputs],
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="caffe-compat",
        producer_version=__version__,
    )
    model.ir_version = min(model.ir_version, ir_version_for(opset))  # older runtimes read it
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    return model, initializers


def ir_version_for(opset: int) -> int:
    """The oldest ONNX IR version that allows ``opset`` (8 up to opset 18, as OpenCV 5 and
    older runtimes read; onnx's table for newer opsets)."""
    return 8 if opset <= 18 else 9 if opset <= 20 else 10


FLOAT16_MAX = 65504.0
FLOAT16_MIN_SIZE = 64  # smaller initializers (shapes, axes, scalars) stay float32: no gain


def float16_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model with every float32 weight of at least ``FLOAT16_MIN_SIZE`` values stored as
    float16 and cast back to float32 at the start of the graph (a Cast node each): the file
    about halves, the inputs, outputs and arithmetic stay float32. Returns (model, how many
    weights were halved). A weight outside float16's range (|w| > 65504) raises, naming it."""
    import numpy as np
    from onnx import numpy_helper

    half = onnx.ModelProto()
    half.CopyFrom(model)
    graph = half.graph
    kept, casts, count = [], [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < FLOAT16_MIN_SIZE:
            kept.append(init)
            continue
        array = numpy_helper.to_array(init)
        peak = float(np.abs(array).max())
        if not np.isfinite(peak) or peak > FLOAT16_MAX:
            raise CaffeCompatError(
                f"weight {init.name} holds {peak:g}, outside float16's range (|w| <= 65504): "
                "convert without --fp16"
            )
        stored = numpy_helper.from_array(array.astype(np.float16), f"{init.name}__fp16")
        kept.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [init.name], to=TensorProto.FLOAT))
        count += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return half, count


def check_model(model: onnx.ModelProto | bytes) -> None:
    """onnx's checker with full checking (strict shape inference); given the serialised bytes,
    it checks them without serialising the model once more."""
    onnx.checker.check_model(model, full_check=True)


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write atomically."""
    with atomic_output(path) as tmp:
        onnx.save_model(model, str(tmp))
