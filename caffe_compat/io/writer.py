"""Writers: binary caffemodels (V2 or V1 wire layout), HDF5 (see hdf5.py) and prototxt text.

Layer definitions are serialised by protobuf; blob data is streamed from the arrays straight to the
file, never copied into protobuf repeated fields. Every file is written to a temporary name first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import BinaryIO, Literal

import numpy as np
from google.protobuf import text_format

from ..proto import caffe_pb2
from .atomic import atomic_output
from .messages import copy_without
from .upgrade import v2_layer_to_v1
from .wire import I32, LEN, iter_fields, write_key, write_varint

Encoding = Literal["packed", "unpacked", "double"]


class _Blob:
    """One blob ready to stream: its small header bytes and the data piece(s) that follow."""

    def __init__(self, array: np.ndarray, legacy: bool, encoding: Encoding) -> None:
        array = np.asarray(array)
        header = caffe_pb2.BlobProto()
        if legacy and array.ndim <= 4:
            dims = (1,) * (4 - array.ndim) + tuple(array.shape)
            header.num, header.channels, header.height, header.width = dims
        else:
            header.shape.dim.extend(int(d) for d in array.shape)
        self.header = header.SerializeToString()
        self.encoding = encoding
        # Field-number order, as Caffe writes it: num..width (1-4), data (5), shape (7), double (8).
        self.header_first = encoding == "double" or not header.HasField("shape")
        if encoding == "double":
            self.values = np.ascontiguousarray(array, dtype="<f8").reshape(-1)
            self.prefix = write_key(8, LEN) + write_varint(self.values.nbytes)
        elif encoding == "unpacked":
            values = np.ascontiguousarray(array, dtype="<f4").reshape(-1)
            rows = np.empty(values.size, dtype=[("tag", "u1"), ("value", "<f4")])
            rows["tag"] = (5 << 3) | I32
            rows["value"] = values
            self.values = rows
            self.prefix = b""
        else:
            self.values = np.ascontiguousarray(array, dtype="<f4").reshape(-1)
            self.prefix = write_key(5, LEN) + write_varint(self.values.nbytes)
        self.size = len(self.header) + len(self.prefix) + self.values.nbytes

    def write(self, out: BinaryIO) -> None:
        if self.header_first:
            out.write(self.header)
        out.write(self.prefix)
        if self.values.nbytes:
            out.write(memoryview(self.values).cast("B"))
        if not self.header_first:
            out.write(self.header)


def _layer_def(layer: caffe_pb2.LayerParameter, version: int) -> tuple[bytes, bytes]:
    """The definition's bytes before and after its blobs, so a layer comes out in field-number
    order as Caffe (C++ protobuf) writes it: byte-identical files for identical nets."""
    definition = copy_without(layer, ["blobs"])
    blob_field = 7
    if version == 1:
        definition, blob_field = v2_layer_to_v1(definition), 6
    data = definition.SerializeToString()
    later = (f.tag_start for f in iter_fields(data, 0, len(data)) if f.number > blob_field)
    split = next(later, len(data))
    return data[:split], data[split:]


def write_caffemodel(
    path: str | os.PathLike[str],
    net: caffe_pb2.NetParameter,
    blobs: Mapping[str, Sequence[np.ndarray]],
    *,
    version: Literal[1, 2] = 2,
    encoding: Encoding = "packed",
) -> None:
    """Write ``net``'s layers (V2 definitions) with ``blobs`` by layer name as a binary caffemodel.

    ``version=1`` writes the old ``layers`` layout with enum types and legacy 4-D blob dims, as
    Caffe did before 2015; ``encoding`` selects packed floats (Caffe's own), unpacked floats or
    ``double_data``, all of which Caffe reads.
    """
    if encoding not in ("packed", "unpacked", "double"):
        raise ValueError(f"encoding must be packed, unpacked or double, not {encoding!r}")
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, not {version!r}")
    layer_field, blob_field = (2, 6) if version == 1 else (100, 7)
    known = {layer.name for layer in net.layer}
    unknown = sorted(set(blobs) - known)
    if unknown:
        raise ValueError(f"blobs for layers not in the net: {', '.join(unknown)}")
    header = copy_without(net, ["layer", "layers"])
    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        out.write(header.SerializeToString())
        for layer in net.layer:
            head, tail = _layer_def(layer, version)
            pieces = [_Blob(a, version == 1, encoding) for a in blobs.get(layer.name, ())]
            frames = [write_key(blob_field, LEN) + write_varint(p.size) for p in pieces]
            size = len(head) + len(tail) + sum(len(f) + p.size for f, p in zip(frames, pieces))
            out.write(write_key(layer_field, LEN) + write_varint(size))
            out.write(head)
            for frame, piece in zip(frames, pieces):
                out.write(frame)
                piece.write(out)
            out.write(tail)


def write_mean(path: str | os.PathLike[str], mean: np.ndarray) -> None:
    """Write a (C, H, W) mean image as a legacy 1xCxHxW BlobProto, as Caffe's tools do."""
    if mean.ndim != 3:
        raise ValueError(f"a mean image is (C, H, W), got shape {list(mean.shape)}")
    piece = _Blob(mean[None], True, "packed")
    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        piece.write(out)


def net_to_text(net: caffe_pb2.NetParameter) -> str:
    """Prototxt text of a net, as protobuf prints it."""
    return text_format.MessageToString(net)


def write_prototxt(
    path: str | os.PathLike[str], net: caffe_pb2.NetParameter, *, comment: str | None = None
) -> None:
    """Write a net as prototxt text (atomically), optionally under a ``#`` comment header."""
    header = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    with atomic_output(path) as tmp:
        tmp.write_text(header + net_to_text(net), encoding="utf-8")


def definitions_only(layers: Iterable[caffe_pb2.LayerParameter]) -> caffe_pb2.NetParameter:
    """A NetParameter holding copies of ``layers`` without their blobs."""
    net = caffe_pb2.NetParameter()
    net.layer.extend(copy_without(layer, ["blobs"]) for layer in layers)
    return net
