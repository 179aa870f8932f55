"""What fills a pycaffe net's data layers on each forward, as Caffe's data layers do.

- DummyData: a constant top is filled once when the net is made (what Python writes there then
  stays), any other is drawn anew on every forward (dummy_data_layer.cpp), from the net's
  generator.
- MemoryData: the arrays given to ``set_input_arrays``, ``batch_size`` items per forward,
  wrapping around (memory_data_layer.cpp); Caffe keeps references, so later edits to the arrays
  are seen.
- Data, ImageData, HDF5Data: the training data readers (caffe_compat.train.data), one batch per
  forward in this process; in a solver's nets the solver feeds them instead.
- Other data layers (WindowData, ...): the blobs keep what Python writes into them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import registry
from ..errors import CaffeCompatError
from ..ir.phase import NetState, layer_included
from ..proto import caffe_pb2

if TYPE_CHECKING:
    import torch

Net = Any  # a pycaffe Net (pycaffe.py imports this module)

Tops = Callable[["torch.device"], dict[str, Any]]


def batch_sources(
    net: caffe_pb2.NetParameter, state: NetState, path: str | None, seed: int
) -> dict[str, Any]:
    """Layer name -> the batch source of each data layer of this state that reads a source
    (its shuffles, crops and mirrors drawn from ``seed``)."""
    from ..train.data.sources import make_source

    found = {}
    for layer in net.layer:
        if layer_included(state, layer) and registry.facts(layer.type).batch_source:
            found[layer.name] = make_source(layer, state.phase, seed, path)
    return found


def provider(net: Net, li: int, param: caffe_pb2.LayerParameter, source: Any) -> Tops | None:
    """The function filling data layer ``li``'s tops on a forward, or None (blobs left alone)."""
    facts = registry.facts(param.type)
    if facts.top_fillers is not None:
        return _dummy(net, li, param, facts.top_fillers(param))
    if param.type == "MemoryData":
        return _memory(net, li, param)
    if source is not None:
        return _stream(param, source)
    return None


def _dummy(net: Net, li: int, param: caffe_pb2.LayerParameter, fillers: list) -> Tops:
    from ..train._fill import fill_tensor

    engine = net._engine
    tops = list(param.top)
    blobs = [net._blobs[i] for i in net._layout.top_ids[li]]
    import torch

    cpu = torch.device("cpu")
    for blob, filler in zip(blobs, fillers):
        if filler.type == "constant":  # filled once, at LayerSetUp
            tensor = fill_tensor(filler, blob.shape, engine.generator(cpu), cpu)
            np.copyto(blob._view(), tensor.numpy(), casting="unsafe")

    def draw(device: torch.device) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for top, blob, filler in zip(tops, blobs, fillers):
            if filler.type != "constant":
                out[top] = fill_tensor(filler, blob.shape, engine.generator(device), device)
        return out

    return draw


class _Memory:
    """MemoryDataLayer's state: the arrays and the position of the next batch."""

    def __init__(self, param: caffe_pb2.LayerParameter) -> None:
        p = param.memory_data_param
        self.name = param.name
        self.batch = int(p.batch_size)
        self.item = (int(p.channels), int(p.height), int(p.width))
        self.data: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.pos = 0


def _memory(net: Net, li: int, param: caffe_pb2.LayerParameter) -> Tops:
    import torch

    state = _Memory(param)
    net.__dict__.setdefault("_memory", {})[li] = state
    tops = list(param.top)

    def serve(device: torch.device) -> dict[str, Any]:
        if state.data is None or state.labels is None:
            raise CaffeCompatError(
                "MemoryDataLayer needs to be initialized by calling Reset (give the net its "
                "arrays with net.set_input_arrays(data, labels) first)",
                path=net._graph.path,
                layer=state.name,
                layer_type="MemoryData",
            )
        n = len(state.data)
        rows = slice(state.pos, state.pos + state.batch)
        out = {tops[0]: torch.from_numpy(np.ascontiguousarray(state.data[rows])).to(device)}
        if len(tops) > 1:
            labels = np.ascontiguousarray(state.labels[rows]).reshape(state.batch)
            out[tops[1]] = torch.from_numpy(labels).to(device)
        state.pos = (state.pos + state.batch) % n
        return out

    return serve


def set_input_arrays(net: Net, data: np.ndarray, labels: np.ndarray) -> None:
    """pycaffe's ``_set_input_arrays``: Caffe's checks, then the arrays (kept by reference)."""
    memory = net.__dict__.get("_memory", {})
    first = net._layout.layers[0] if net._layout.layers else None
    if first is None or first.type != "MemoryData" or 0 not in memory:
        raise CaffeCompatError(
            "set_input_arrays may only be called if the first layer is a MemoryDataLayer",
            path=net._graph.path,
        )
    state = memory[0]
    for what, array in (("data", data), ("labels", labels)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{what} must be a numpy array")
        if array.dtype != np.float32:
            raise ValueError(f"{what} must be float32")
        if not array.flags["C_CONTIGUOUS"]:
            raise ValueError(f"{what} must be C-contiguous")
        if array.ndim != 4:
            raise ValueError(f"{what} must be 4-d")
    if labels.shape[1:] != (1, 1, 1):
        raise ValueError("labels must have 1 channel, height and width 1")
    if data.shape[0] != labels.shape[0]:
        raise ValueError("data and labels must have the same first dimension")
    if data.shape[0] % state.batch != 0:
        raise ValueError("first dimensions of input arrays must be a multiple of batch size")
    if tuple(data.shape[1:]) != state.item:
        raise ValueError(
            f"data has item shape {list(data.shape[1:])}; the layer's memory_data_param "
            f"declares {list(state.item)}"
        )
    if data.shape[0] == 0 or math.prod(data.shape) == 0:
        raise ValueError("data must hold at least one batch")
    state.data, state.labels, state.pos = data, labels, 0
    net.__dict__["_input_data"], net.__dict__["_input_labels"] = data, labels


def _stream(param: caffe_pb2.LayerParameter, source: Any) -> Tops:
    import torch

    position = [0]

    def read(device: torch.device) -> dict[str, Any]:
        batch = source.batch(position[0])
        position[0] += 1
        return {top: torch.from_numpy(np.asarray(v)).to(device) for top, v in batch.items()}

    return read
