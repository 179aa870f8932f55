"""Caffe's own view of a net: its layer list, blob order, inputs and outputs.

pycaffe's names and orders come from Caffe's ``Net::Init``: layers filtered by the NetState, Split
layers inserted wherever one top feeds several bottoms (``InsertSplits``, with Caffe's names), blobs
numbered in order of first appearance as a top (in-place tops reuse the bottom's blob), inputs are
the tops of Input layers, and outputs are the blobs nobody consumed, sorted by name (a std::set).
A net built for training (``training=True``: train/val nets) keeps its data layers with every top
(labels too; they fill their tops on each forward and are not net inputs), its losses, Accuracy
and Silence, and gives a loss layer without tops Caffe's anonymous ``(automatic)`` top. Without
it (deploy nets) a data layer stands in as an input with its first top.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .. import registry
from ..errors import NetDefinitionError
from ..ir.build import AUTOMATIC  # Caffe's name for the top a loss layer without tops gets
from ..ir.phase import NetState, layer_included
from ..proto import caffe_pb2

INPUT, DATA, SPLIT, NODE = "input", "data", "split", "node"


@dataclass
class CaffeLayer:
    """One layer as Caffe holds it (phase set, bottoms renamed to split blobs)."""

    param: caffe_pb2.LayerParameter
    kind: str  # INPUT, DATA, SPLIT or NODE (computed by a graph node of the same name)
    auto_tops: int = 0  # anonymous tops Caffe adds (AutoTopBlobs), not in the definition

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def type(self) -> str:
        return self.param.type

    @property
    def bottoms(self) -> list[str]:
        return list(self.param.bottom)

    @property
    def tops(self) -> list[str]:
        return list(self.param.top) + [AUTOMATIC] * self.auto_tops


@dataclass
class Layout:
    layers: list[CaffeLayer]
    blob_names: list[str] = field(default_factory=list)
    bottom_ids: list[list[int]] = field(default_factory=list)
    top_ids: list[list[int]] = field(default_factory=list)
    input_ids: list[int] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)
    loss_weights: list[float] = field(default_factory=list)
    producers: list[int] = field(default_factory=list)  # blob id -> the layer that made it


def split_layer_name(layer: str, blob: str, top_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split"


def split_blob_name(layer: str, blob: str, top_index: int, split_index: int) -> str:
    return f"{split_layer_name(layer, blob, top_index)}_{split_index}"


def _kept_layers(
    net: caffe_pb2.NetParameter, state: NetState, path: str | None, training: bool
) -> list[CaffeLayer]:
    kept: list[CaffeLayer] = []
    for layer in net.layer:
        role = registry.role(layer.type)
        if not layer_included(state, layer) or (role == "training" and not training):
            continue
        param = caffe_pb2.LayerParameter()
        param.CopyFrom(layer)
        if not param.HasField("phase"):
            param.phase = caffe_pb2.Phase.Value(state.phase)
        if role == "input":
            kept.append(CaffeLayer(param, INPUT))
        elif role == "data" and training:
            kept.append(CaffeLayer(param, DATA))
        elif role == "data":
            del param.top[1:]  # labels feed only the losses a deploy net leaves out
            kept.append(CaffeLayer(param, INPUT))
        else:
            auto = int(training and registry.facts(layer.type).loss and not layer.top)
            kept.append(CaffeLayer(param, NODE, auto))
    return kept


def insert_splits(layers: list[CaffeLayer], path: str | None = None) -> list[CaffeLayer]:
    """Caffe's InsertSplits: a Split layer after every top that more than one bottom reads."""
    last_top: dict[str, tuple[int, int]] = {}
    source: dict[tuple[int, int], tuple[int, int]] = {}
    readers: Counter[tuple[int, int]] = Counter()
    loss_weight: dict[tuple[int, int], float] = {}
    for i, layer in enumerate(layers):
        for j, blob in enumerate(layer.param.bottom):
            if blob not in last_top:
                raise NetDefinitionError(
                    f"unknown bottom blob '{blob}' (bottom index {j})",
                    path=path,
                    layer=layer.name,
                    layer_type=layer.type,
                )
            source[(i, j)] = last_top[blob]
            readers[last_top[blob]] += 1
        for j, blob in enumerate(layer.param.top):
            last_top[blob] = (i, j)
        for j in range(min(len(layer.param.loss_weight), len(layer.param.top))):
            key = last_top[layer.param.top[j]]
            loss_weight[key] = layer.param.loss_weight[j]
            if loss_weight[key]:
                readers[key] += 1
    out: list[CaffeLayer] = []
    taken: Counter[tuple[int, int]] = Counter()
    for i, layer in enumerate(layers):
        param = caffe_pb2.LayerParameter()
        param.CopyFrom(layer.param)
        for j, blob in enumerate(list(param.bottom)):
            src = source[(i, j)]
            if readers[src] > 1:
                param.bottom[j] = split_blob_name(layers[src[0]].name, blob, src[1], taken[src])
                taken[src] += 1
        out.append(CaffeLayer(param, layer.kind, layer.auto_tops))
        for j, blob in enumerate(list(param.top)):
            count = readers[(i, j)]
            if count <= 1:
                continue
            weight = loss_weight.get((i, j), 0.0)
            split = caffe_pb2.LayerParameter(
                name=split_layer_name(layer.name, blob, j), type="Split", phase=param.phase
            )
            split.bottom.append(blob)
            for k in range(count):
                split.top.append(split_blob_name(layer.name, blob, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                param.ClearField("loss_weight")
                taken[(i, j)] += 1
            out.append(CaffeLayer(split, SPLIT))
    return out


def build_layout(
    net: caffe_pb2.NetParameter,
    state: NetState,
    path: str | None = None,
    *,
    training: bool = False,
) -> Layout:
    """Layers, blobs, inputs and outputs of ``net`` (upgraded to V2), numbered as Caffe does."""
    layout = Layout(insert_splits(_kept_layers(net, state, path, training), path))
    index: dict[str, int] = {}
    available: set[str] = set()
    for li, layer in enumerate(layout.layers):
        bottoms = []
        for blob in layer.param.bottom:
            if blob not in available:
                raise NetDefinitionError(
                    f"unknown bottom blob '{blob}'", path=path, layer=layer.name
                )
            bottoms.append(index[blob])
            available.discard(blob)
        tops = []
        weights = [float(w) for w in layer.param.loss_weight]
        if not weights and registry.facts(layer.type).loss:
            weights = [1.0]  # LossLayer::LayerSetUp: a loss's first top weighs 1
        for j, blob in enumerate(layer.param.top):
            in_place = j < len(layer.param.bottom) and layer.param.bottom[j] == blob
            if in_place:
                tops.append(index[blob])
            elif blob in index:
                raise NetDefinitionError(
                    f"top blob '{blob}' produced by multiple sources",
                    path=path,
                    layer=layer.name,
                    layer_type=layer.type,
                )
            else:
                index[blob] = len(layout.blob_names)
                layout.blob_names.append(blob)
                layout.loss_weights.append(0.0)
                layout.producers.append(li)
                tops.append(index[blob])
            # Net::Init: each layer sets its tops' weights, in-place tops included.
            layout.loss_weights[index[blob]] = weights[j] if j < len(weights) else 0.0
            available.add(blob)
            if layer.kind == INPUT:
                layout.input_ids.append(index[blob])
        for _ in range(layer.auto_tops):  # a blob no layer can read, never an output
            tops.append(len(layout.blob_names))
            layout.blob_names.append(AUTOMATIC)
            layout.producers.append(li)
            layout.loss_weights.append(weights[0] if weights else 1.0)
        layout.bottom_ids.append(bottoms)
        layout.top_ids.append(tops)
    layout.output_ids = [index[blob] for blob in sorted(available)]
    return layout
