"""``caffe.draw``: BVLC Caffe's python/caffe/draw.py API (what ``draw_net.py`` calls).

``get_pydot_graph`` builds the pydot graph Caffe builds (pydot from the ``draw`` extra); the
drawing functions use it where pydot and Graphviz's ``dot`` are installed and otherwise draw with
caffe-compat's built-in layout (SVG, PNG; DOT text for ``.dot``/``.raw``), so scripts that call
``caffe.draw.draw_net_to_file`` work on a plain install too.

Imports are absolute: with ``caffe_compat.pycaffe.install()`` this module also loads as
``caffe.draw``.
"""

from __future__ import annotations

from typing import Any

from caffe_compat.draw import render
from caffe_compat.draw.dot import graphviz_program
from caffe_compat.draw.model import LAYER_FILL, lr_mults, net_drawing
from caffe_compat.errors import CaffeCompatError
from caffe_compat.proto import caffe_pb2

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": LAYER_FILL, "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
# draw.py's own colours, by Caffe's type names (the API this module reproduces).
TYPE_FILLS = {
    "Convolution": "#FF5050",
    "Deconvolution": "#FF5050",
    "Pooling": "#FF9900",
    "InnerProduct": "#CC33FF",
}
SPATIAL = ("Convolution", "Deconvolution", "Pooling")
LEARNING = ("Convolution", "Deconvolution", "InnerProduct")


def get_pooling_types_dict() -> dict[int, str]:
    """Pooling method number -> name (``MAX``, ``AVE``, ``STOCHASTIC``)."""
    return {number: name for name, number in caffe_pb2.PoolingParameter.PoolMethod.items()}


def get_edge_label(layer: caffe_pb2.LayerParameter) -> str:
    """The label of a layer's top edges: ``Batch N`` for Data, num_output of conv and fc."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer: caffe_pb2.LayerParameter) -> tuple[float, float]:
    """Learning-rate multipliers of weights and bias; only learning layers have them."""
    if layer.type not in LEARNING:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    if len(layer.param) > 2:
        raise ValueError("Could not parse the learning rate multiplier")
    return lr_mults(layer)


def get_layer_label(
    layer: caffe_pb2.LayerParameter, rankdir: str, display_lrm: bool = False
) -> str:
    """``"name(sep)(type)(sep)kernel size: k ..."``, double-quoted for DOT; the separator is
    a DOT line break left to right, a space top to bottom."""
    separator = " " if rankdir in ("TB", "BT") else "\\n"
    if layer.type == "Pooling":
        method = get_pooling_types_dict()[layer.pooling_param.pool]
        parts = [layer.name, f"({layer.type} {method})"]
    else:
        parts = [layer.name, f"({layer.type})"]
    if layer.type in SPATIAL:
        if layer.type == "Pooling":
            p = layer.pooling_param
            kernel, stride, pad = p.kernel_size, p.stride, p.pad
        else:
            c = layer.convolution_param
            kernel = c.kernel_size[0] if c.kernel_size else 1
            stride = c.stride[0] if c.stride else 1
            pad = c.pad[0] if c.pad else 0
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]))
    if display_lrm and layer.type in LEARNING:
        weights, bias = get_layer_lr_mult(layer)
        if weights or bias:
            parts.append(f"lr mult: {weights:.1f}, {bias:.1f}")
    return '"' + separator.join(parts) + '"'


def choose_color_by_layertype(layertype: str) -> str:
    """draw.py's fill of a (not in-place) layer box by its type."""
    return TYPE_FILLS.get(layertype, LAYER_FILL)


def _included(layer: caffe_pb2.LayerParameter, phase: int | None) -> bool:
    """draw.py's phase rule: include rules name the phase, exclude rules do not."""
    if phase is None:
        return True
    if layer.include and layer.exclude:
        raise ValueError(f"layer {layer.name} has both include and exclude specified.")
    if layer.include:
        return any(rule.phase == phase for rule in layer.include)
    return not any(rule.phase == phase for rule in layer.exclude)


def _pydot() -> Any:
    try:
        import pydot
    except ImportError:
        raise ImportError(
            "caffe.draw.get_pydot_graph needs pydot: pip install 'caffe-compat[draw]'"
        ) from None
    return pydot


def get_pydot_graph(
    caffe_net: caffe_pb2.NetParameter,
    rankdir: str,
    label_edges: bool = True,
    phase: int | None = None,
    display_lrm: bool = False,
) -> Any:
    """The pydot graph of a NetParameter: layer records, blob octagons, labelled edges."""
    pydot = _pydot()
    graph = pydot.Dot(caffe_net.name or "Net", graph_type="digraph", rankdir=rankdir)
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str, str]] = []
    for layer in caffe_net.layer:
        if not _included(layer, phase):
            continue
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        key = f"{layer.name}_{layer.type}"
        in_place = (
            len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        )
        style = (
            NEURON_LAYER_STYLE
            if in_place
            else {**LAYER_STYLE_DEFAULT, "fillcolor": choose_color_by_layertype(layer.type)}
        )
        nodes[key] = pydot.Node(label, **style)
        for bottom in layer.bottom:
            nodes[f"{bottom}_blob"] = pydot.Node(bottom, **BLOB_STYLE)
            edges.append((f"{bottom}_blob", key, '""'))
        for top in layer.top:
            nodes[f"{top}_blob"] = pydot.Node(top)  # unstyled, as draw.py leaves a top
            edges.append((key, f"{top}_blob", get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for source, target, label in edges:
        graph.add_edge(pydot.Edge(nodes[source], nodes[target], label=label))
    return graph


def draw_net(
    caffe_net: caffe_pb2.NetParameter,
    rankdir: str,
    ext: str = "png",
    phase: int | None = None,
    display_lrm: bool = False,
) -> bytes:
    """The picture's bytes in format ``ext``: through pydot and Graphviz where installed, else
    the built-in layout (svg, png; dot or raw for DOT text)."""
    try:
        _pydot()
        have_pydot = graphviz_program() is not None
    except ImportError:
        have_pydot = False
    if have_pydot:
        graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
        return graph.create(format=ext)
    fmt = "dot" if ext in ("dot", "gv", "raw") else ext
    if fmt not in ("svg", "png", "dot"):
        raise CaffeCompatError(
            f"without Graphviz caffe.draw writes svg, png or dot, not {ext!r} "
            "(apt-get install graphviz; pip install 'caffe-compat[draw]')"
        )
    kept = caffe_pb2.NetParameter()
    kept.CopyFrom(caffe_net)
    del kept.layer[:]
    kept.layer.extend(layer for layer in caffe_net.layer if _included(layer, phase))
    drawing = net_drawing(kept, rankdir=rankdir, display_lrm=display_lrm)
    return render(drawing, fmt, engine="builtin")[0]


def draw_net_to_file(
    caffe_net: caffe_pb2.NetParameter,
    filename: str,
    rankdir: str = "LR",
    phase: int | None = None,
    display_lrm: bool = False,
) -> None:
    """Draw into ``filename`` in the format its extension names."""
    ext = filename[filename.rfind(".") + 1 :]
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as handle:
        handle.write(data)
