"""What a drawing of a net shows, independent of how it is rendered: Caffe's ``draw_net.py``
picture of a NetParameter (layers as boxes labelled with their type and key parameters, blobs as
ovals, an edge per bottom and top, in-place layers beside the blob they rewrite), from V0, V1 or
V2 definitions, for one phase or for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from ..io.prototxt import load_prototxt
from ..io.upgrade import upgrade_net
from ..ir.phase import NetState, layer_included
from ..proto import caffe_pb2

# Caffe's draw.py colours: layer fill by type, in-place (neuron) layers green, blobs grey.
LAYER_FILL = "#6495ED"
NEURON_FILL = "#90EE90"
BLOB_FILL = "#E0E0E0"
TYPE_FILLS = {
    "Convolution": "#FF5050",
    "Deconvolution": "#FF5050",
    "Pooling": "#FF9900",
    "InnerProduct": "#CC33FF",
}
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


def _first(values: Iterable[int], default: int) -> int:
    values = list(values)
    return int(values[0]) if values else default


def _conv_facts(p: caffe_pb2.ConvolutionParameter) -> list[str]:
    kernel = _first(p.kernel_size, 0) or (f"{p.kernel_h}x{p.kernel_w}" if p.kernel_h else 1)
    stride = _first(p.stride, 0) or (f"{p.stride_h}x{p.stride_w}" if p.stride_h else 1)
    pad = _first(p.pad, 0) or (f"{p.pad_h}x{p.pad_w}" if p.pad_h or p.pad_w else 0)
    facts = [f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]
    if p.group > 1:
        facts.append(f"group: {p.group}")
    if _first(p.dilation, 1) > 1:
        facts.append(f"dilation: {_first(p.dilation, 1)}")
    return facts


def _pool_facts(p: caffe_pb2.PoolingParameter) -> list[str]:
    if p.global_pooling:
        return ["global"]
    kernel = p.kernel_size or (f"{p.kernel_h}x{p.kernel_w}" if p.kernel_h else 0)
    stride = p.stride if not p.stride_h else f"{p.stride_h}x{p.stride_w}"
    pad = p.pad if not (p.pad_h or p.pad_w) else f"{p.pad_h}x{p.pad_w}"
    return [f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]


def _other_facts(layer: caffe_pb2.LayerParameter) -> list[str]:
    """A key parameter or two of common types that draw.py shows only as edge labels or not."""
    kind = layer.type
    if kind == "LRN":
        p = layer.lrn_param
        region = "within" if p.norm_region == p.WITHIN_CHANNEL else "across"
        return [f"local size: {p.local_size} ({region})"]
    if kind == "Dropout":
        return [f"ratio: {layer.dropout_param.dropout_ratio:g}"]
    if kind == "Concat":
        axis = layer.concat_param.axis if not layer.concat_param.HasField("concat_dim") else None
        return [f"axis: {axis if axis is not None else layer.concat_param.concat_dim}"]
    if kind == "Eltwise":
        return [caffe_pb2.EltwiseParameter.EltwiseOp.Name(layer.eltwise_param.operation)]
    if kind == "Input" and layer.input_param.shape:
        return ["x".join(str(d) for d in shape.dim) for shape in layer.input_param.shape]
    return []


def layer_label(layer: caffe_pb2.LayerParameter, *, display_lrm: bool = False) -> list[str]:
    """``name``, ``(type)`` and the key parameters, as draw.py labels a layer."""
    kind = layer.type
    if kind in ("Convolution", "Deconvolution"):
        lines = [layer.name, f"({kind})", *_conv_facts(layer.convolution_param)]
    elif kind == "Pooling":
        method = caffe_pb2.PoolingParameter.PoolMethod.Name(layer.pooling_param.pool)
        lines = [layer.name, f"({kind} {method})", *_pool_facts(layer.pooling_param)]
    else:
        lines = [layer.name, f"({kind})", *_other_facts(layer)]
    if display_lrm and kind in ("Convolution", "Deconvolution", "InnerProduct"):
        weights, bias = lr_mults(layer)
        lines.append(f"lr mult: {weights:.1f}, {bias:.1f}")
    return lines


def lr_mults(layer: caffe_pb2.LayerParameter) -> tuple[float, float]:
    """The learning-rate multipliers of a layer's weights and bias (1 where not given)."""
    given = [p.lr_mult for p in layer.param[:2]] + [1.0, 1.0]
    return given[0], given[1]


def edge_label(layer: caffe_pb2.LayerParameter) -> str:
    """draw.py's label on a layer's top edges: batch size of Data, outputs of conv and fc."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


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
        fill = NEURON_FILL if in_place else TYPE_FILLS.get(layer.type, LAYER_FILL)
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
