"""What a drawing of a net shows, independent of how it is rendered: Caffe's ``draw_net.py``
picture of a NetParameter (layers as boxes labelled with their type and key parameters, blobs as
ovals, an edge per bottom and top, in-place layers beside the blob they rewrite), from V0, V1 or
V2 definitions, for one phase or for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .. import registry
from ..io.prototxt import load_prototxt
from ..io.upgrade import upgrade_net
from ..ir.phase import NetState, layer_included
from ..proto import caffe_pb2

# Caffe's draw.py colours: layer fill by type, in-place (neuron) layers green, blobs grey.
LAYER_FILL = "#6495ED"
NEURON_FILL = "#90EE90"
BLOB_FILL = "#E0E0E0"
FAMILY_FILLS = {"conv": "#FF5050", "pooling": "#FF9900", "inner_product": "#CC33FF"}
RANKDIRS = ("LR", "TB", "BT", "RL")


@dataclass
class Shape:
    """One node of the picture: a layer (box) or a blob (oval)."""

    id: str
    kind: str  # "layer" or "blob"
    lines: list[str]  # the label, one entry per line
    fill: str
    name: str  # the layer's or blob's name in the net
    type: str = ""  # the layer's type
    in_place: bool = False
    note: str = ""  # a tooltip (the verify report puts the error ratio here)
    marked: bool = False  # drawn with a heavy outline (the first failing layer)


@dataclass
class Edge:
    source: str
    target: str
    label: str = ""


@dataclass
class Drawing:
    """The nodes and edges of one picture, in the order the net defines them."""

    name: str
    shapes: list[Shape] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    rankdir: str = "LR"

    def shape(self, shape_id: str) -> Shape:
        for shape in self.shapes:
            if shape.id == shape_id:
                return shape
        raise KeyError(shape_id)

    def layers(self) -> list[Shape]:
        return [s for s in self.shapes if s.kind == "layer"]

    def recoloured(
        self, fill: Callable[[Shape], tuple[str, str] | None], marked: Iterable[str] = ()
    ) -> Drawing:
        """A copy whose layers take ``fill(shape)`` -> (colour, tooltip) where it is not None;
        layers named in ``marked`` get a heavy outline."""
        marked = set(marked)
        shapes = []
        for shape in self.shapes:
            found = fill(shape) if shape.kind == "layer" else None
            shape = replace(shape, marked=shape.kind == "layer" and shape.name in marked)
            if found is not None:
                shape = replace(shape, fill=found[0], note=found[1])
            shapes.append(shape)
        return replace(self, shapes=shapes)


def read_definition(
    path: str | os.PathLike[str], *, allow_unknown_fields: bool = False
) -> caffe_pb2.NetParameter:
    """A V0, V1 or V2 prototxt, upgraded to V2 as Caffe upgrades it (so draw sees one form)."""
    net, _ = load_prototxt(path, allow_unknown_fields=allow_unknown_fields)
    upgrade_net(net, path=str(path))
    return net


# Fields shown elsewhere (edge labels) or too long for a box: fillers, engines, sources.
HIDDEN_FIELDS = {"num_output", "batch_size", "engine", "source", "mean_file", "backend"}
MAX_FACTS = 4  # lines of parameters under a layer's name and type


def layer_params(layer: caffe_pb2.LayerParameter) -> list[Message]:
    """The ``*_param`` messages the layer sets (its type's own, whatever the type)."""
    return [
        value
        for desc, value in layer.ListFields()
        if desc.name.endswith("_param")
        and desc.name not in ("transform_param", "loss_param")
        and desc.message_type is not None
    ]


def _dims(values: Iterable[int]) -> str:
    return "x".join(str(int(v)) for v in values)


def _spatial(param: Message) -> list[str]:
    """draw_net.py's kernel size / stride / pad, defaults included (conv and pooling alike:
    any parameter message with a kernel_size field)."""
    fields = param.DESCRIPTOR.fields_by_name
    if getattr(param, "global_pooling", False):
        return ["global"]

    def read(name: str, default: int) -> str:
        value = getattr(param, name)
        if fields[name].is_repeated:
            value = value[0] if len(value) else None
        elif not param.HasField(name):
            value = None
        h, w = f"{name}_h", f"{name}_w"
        if value is None and h in fields and (param.HasField(h) or param.HasField(w)):
            return f"{getattr(param, h)}x{getattr(param, w)}"
        return str(default if value is None else value)

    return [
        f"kernel size: {read('kernel_size', 1)}",
        f"stride: {read('stride', 1)}",
        f"pad: {read('pad', 0)}",
    ]


def _scalar(value: object) -> str:
    """As prototxt text writes it: ``true``, ``0.0001``, ``96``."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _field_text(field: FieldDescriptor, value: Any) -> list[str]:
    """``name: value`` for a scalar, enum or repeated scalar field, a line per shape for
    shapes; nothing for other messages (fillers)."""
    name = field.name.replace("_", " ")
    items = list(value) if field.is_repeated else [value]
    if field.message_type is not None:
        if field.message_type.name == "BlobShape":
            return [_dims(shape.dim) for shape in items]
        return []
    if field.enum_type is not None:
        names = field.enum_type.values_by_number
        return [f"{name}: {', '.join(names[int(v)].name for v in items)}"]
    shown = ", ".join(_scalar(v) for v in items)
    return [f"{name}: {shown}"]


def _facts(param: Message) -> list[str]:
    """The key parameters of one parameter message: spatial ones first, then the fields the
    net sets (fillers and long strings left out)."""
    fields = param.DESCRIPTOR.fields_by_name
    spatial = "kernel_size" in fields
    lines = _spatial(param) if spatial else []
    skip = (
        {
            "kernel_size",
            "kernel_h",
            "kernel_w",
            "stride",
            "stride_h",
            "stride_w",
            "pad",
            "pad_h",
            "pad_w",
            "global_pooling",
            "pool",
        }
        if spatial
        else {"pool"}
    )
    for desc, value in param.ListFields():
        if desc.name in HIDDEN_FIELDS or desc.name in skip:
            continue
        if len(lines) < MAX_FACTS + 3 * spatial:
            lines.extend(_field_text(desc, value))
    return lines


def layer_label(layer: caffe_pb2.LayerParameter, *, display_lrm: bool = False) -> list[str]:
    """``name``, ``(type)`` and the key parameters, as draw.py labels a layer (a pooling
    method joins the type: ``(Pooling MAX)``)."""
    kind = f"({layer.type})"
    facts: list[str] = []
    for param in layer_params(layer):
        fields = param.DESCRIPTOR.fields_by_name
        if "pool" in fields and fields["pool"].enum_type is not None:
            kind = f"({layer.type} {fields['pool'].enum_type.values_by_number[param.pool].name})"
        facts.extend(_facts(param))
    lines = [layer.name, kind, *facts]
    if display_lrm and (layer.param or _family(layer.type) in ("conv", "inner_product")):
        weights, bias = lr_mults(layer)
        lines.append(f"lr mult: {weights:.1f}, {bias:.1f}")
    return lines


def lr_mults(layer: caffe_pb2.LayerParameter) -> tuple[float, float]:
    """The learning-rate multipliers of a layer's weights and bias (1 where not given)."""
    given = [p.lr_mult for p in layer.param[:2]] + [1.0, 1.0]
    return given[0], given[1]


def edge_label(layer: caffe_pb2.LayerParameter) -> str:
    """draw.py's label on a layer's top edges: the batch size of data layers, the outputs of
    layers with num_output (convolutions, inner products)."""
    for param in layer_params(layer):
        fields = param.DESCRIPTOR.fields_by_name
        if "batch_size" in fields and param.HasField("batch_size"):
            return f"Batch {param.batch_size}"
        if "num_output" in fields and param.HasField("num_output"):
            return str(param.num_output)
    return ""


def layer_fill(layer: caffe_pb2.LayerParameter) -> str:
    """draw.py's colours by kind of layer: convolutions red, pooling orange, inner products
    purple (by the registry's family), in-place layers green, the rest blue."""
    if len(layer.bottom) == 1 and list(layer.top) == list(layer.bottom):
        return NEURON_FILL
    return FAMILY_FILLS.get(_family(layer.type), LAYER_FILL)


def _family(layer_type: str) -> str:
    """The registry's family of a type; empty for a type it does not know (a fork's)."""
    return registry.facts(layer_type).family


def net_drawing(
    net: caffe_pb2.NetParameter,
    *,
    rankdir: str = "LR",
    phase: str | None = None,
    stages: Iterable[str] = (),
    level: int = 0,
    label_edges: bool = True,
    display_lrm: bool = False,
) -> Drawing:
    """The picture of a V2 NetParameter; ``phase`` None draws every layer (draw_net.py's
    ALL), else only those Caffe keeps in that phase, stage set and level."""
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {', '.join(RANKDIRS)}, not {rankdir!r}")
    state = NetState.make(phase, stages, level) if phase is not None else None
    drawing = Drawing(net.name or "Net", rankdir=rankdir)
    blobs: dict[str, Shape] = {}
    layer_ids: set[str] = set()
    for index, layer in enumerate(net.layer):
        if state is not None and not layer_included(state, layer):
            continue
        in_place = len(layer.bottom) == 1 and list(layer.top) == list(layer.bottom)
        fill = layer_fill(layer)
        layer_id = f"layer:{layer.name}"
        if layer_id in layer_ids:  # two layers of one name: Caffe refuses, the picture need not
            layer_id = f"layer:{layer.name}#{index}"
        layer_ids.add(layer_id)
        lines = layer_label(layer, display_lrm=display_lrm)
        drawing.shapes.append(
            Shape(layer_id, "layer", lines, fill, layer.name, layer.type, in_place)
        )
        for bottom in layer.bottom:
            _blob(drawing, blobs, bottom)
            drawing.edges.append(Edge(f"blob:{bottom}", layer_id))
        label = edge_label(layer) if label_edges else ""
        for top in layer.top:
            _blob(drawing, blobs, top)
            drawing.edges.append(Edge(layer_id, f"blob:{top}", label))
    return drawing


def _blob(drawing: Drawing, blobs: dict[str, Shape], name: str) -> None:
    if name not in blobs:
        blobs[name] = Shape(f"blob:{name}", "blob", [name], BLOB_FILL, name)
        drawing.shapes.append(blobs[name])


def ratio_colour(ratio: float) -> str:
    """Fill for a layer whose worst output is ``ratio`` of its tolerance: green far below it,
    through yellow to orange near it (log scale, 1e-4 .. 1), red above it."""
    import math

    if not ratio < float("inf") or ratio > 1.0:
        return "#E8443A"
    if ratio <= 0.0:
        return "#5CB85C"
    t = min(max((math.log10(ratio) + 4.0) / 4.0, 0.0), 1.0)
    # green (92,184,92) -> yellow (240,200,60) -> orange (245,150,50)
    if t < 0.75:
        u = t / 0.75
        rgb = (92 + (240 - 92) * u, 184 + (200 - 184) * u, 92 + (60 - 92) * u)
    else:
        u = (t - 0.75) / 0.25
        rgb = (240 + 5 * u, 200 - 50 * u, 60 - 10 * u)
    return "#" + "".join(f"{round(c):02X}" for c in rgb)


def layer_ratios(ratios_by_layer: Mapping[str, float]) -> Callable[[Shape], tuple[str, str] | None]:
    """A ``Drawing.recoloured`` fill: each layer by its worst error/tolerance ratio."""

    def fill(shape: Shape) -> tuple[str, str] | None:
        if shape.name not in ratios_by_layer:
            return None
        ratio = ratios_by_layer[shape.name]
        return ratio_colour(ratio), f"worst error / tolerance {ratio:.3g}"

    return fill
