"""``type: "Python"`` layers: the user's own ``caffe.Layer`` subclass named by ``python_param``
(``module``, ``layer``, ``param_str``), as BVLC Caffe's ``PythonLayer`` runs it.

Known classes are replaced by a built-in type that every back end (ONNX included) has:
py-faster-rcnn's ``rpn.proposal_layer.ProposalLayer`` becomes ``Proposal`` (its ``param_str``
gives ``feat_stride`` and ``scales``; the rest are py-faster-rcnn's TEST settings, as OpenCV 4
reads such a net). Any other class is imported (``import caffe`` inside it resolves to
caffe_compat.pycaffe while it loads) and constructed as Caffe does: ``cls(layer_param)``, then
``param_str`` and ``phase`` (the net's; TEST for a deploy net) set, ``setup`` and ``reshape``
called on blobs of the bottoms' shapes; the tops' shapes are what ``reshape`` left. The PyTorch
back end and the float64 reference call ``reshape`` and ``forward`` on every run; ONNX export
refuses such a layer.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, builtin_entry, describe, facts, register

TEST = 1  # caffe.TEST, the phase a deploy net runs in


def _param_dict(text: str, where: str) -> dict[str, Any]:
    """py-faster-rcnn parses ``param_str`` as YAML; its nets write flow-style dict bodies
    (``'feat_stride': 16``), one key per line or comma-separated, keys quoted or bare."""
    lines = [line.strip().rstrip(",") for line in text.strip().splitlines() if line.strip()]
    body = ", ".join(lines)
    if not body:
        return {}
    if not body.startswith("{"):
        body = "{" + body + "}"
    body = re.sub(r"([{,]\s*)([A-Za-z_]\w*)\s*:", r"\1'\2':", body)  # bare YAML keys
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError):
        raise ValueError(f"{where}: param_str {text!r} is not a dict of numbers") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: param_str {text!r} is not a dict")
    return value


def _as_proposal(node: Node) -> Node:
    values = _param_dict(node.param.python_param.param_str, "ProposalLayer")
    param = caffe_pb2.LayerParameter()
    param.CopyFrom(node.param)
    param.type = "Proposal"
    param.ClearField("python_param")
    p = param.proposal_param
    p.feat_stride = int(values.get("feat_stride", 16))
    scales = values.get("scales")
    if scales is not None:
        p.scale.extend(float(v) for v in scales)
    ratios = values.get("ratios")  # PVANet's proposal layer reads them; py-faster-rcnn's has none
    if ratios is not None:
        p.ratio.extend(float(v) for v in ratios)
    return Node(node.name, "Proposal", param, node.inputs, node.outputs, node.blobs, node.line)


def _as_ssh_proposal(node: Node) -> Node:
    """SSH (mahyarnajibi/SSH) ``SSH.layers.proposal_layer.ProposalLayer``, TEST phase only: the
    py-faster-rcnn algorithm with ``base_size``/``ratios``/``scales`` from ``param_str`` and
    SSH's default_config.yml TEST values: the best ``N_DETS_PER_MODULE`` = 1000 boxes, minimum
    size 0 (every clipped box passes, so its empty-result placeholder never occurs) and no NMS
    (``nms_thresh`` 1: an overlap never exceeds it). Its TRAIN phase (NMS 0.3, 300 boxes,
    minimum size 4, a placeholder row when nothing passes) is not this layer: it stays Python."""
    values = _param_dict(node.param.python_param.param_str, "SSH ProposalLayer")
    known = _as_proposal(node)
    p = known.param.proposal_param
    p.base_size = int(values.get("base_size", 16))
    p.min_size = 0
    p.pre_nms_topn = 1000
    p.post_nms_topn = 0
    p.nms_thresh = 1.0
    return known


# (module, class) -> the built-in node that replaces it
KNOWN: dict[tuple[str, str], Callable[[Node], Node]] = {
    ("rpn.proposal_layer", "ProposalLayer"): _as_proposal,
    ("SSH.layers.proposal_layer", "ProposalLayer"): _as_ssh_proposal,
}


def replacement(node: Node) -> Node | None:
    """The built-in layer standing in for this Python layer, when its class is a known one."""
    p = node.param.python_param
    rewrite = KNOWN.get((p.module, p.layer))
    if rewrite is _as_ssh_proposal and node.param.phase == caffe_pb2.TRAIN:
        return None  # SSH's TRAIN phase differs (see _as_ssh_proposal)
    return rewrite(node) if rewrite is not None else None


def user_class(node: Node) -> type:
    """Import ``python_param.module`` with ``import caffe`` resolving to caffe_compat.pycaffe."""
    from .. import pycaffe

    p = node.param.python_param
    if not p.module or not p.layer:
        raise ValueError("python_param needs both module and layer")
    installed = sys.modules.get("caffe") is pycaffe
    pycaffe.install()
    try:
        module = importlib.import_module(p.module)
    except Exception as exc:  # the user's module: any import error is reported in one line
        raise ValueError(
            f"python_param.module {p.module!r} cannot be imported ({type(exc).__name__}: {exc}); "
            "put its folder on PYTHONPATH, as Caffe needs"
        ) from None
    finally:
        if not installed:
            pycaffe.uninstall()
    cls = getattr(module, p.layer, None)
    if not isinstance(cls, type):
        raise ValueError(f"module {p.module!r} has no class {p.layer!r}")
    return cls


def user_layer(node: Node) -> Any:
    """A fresh instance, set up as Caffe's ``PythonLayer`` constructor and LayerSetUp do."""
    layer = user_class(node)(node.param)
    layer.param_str = node.param.python_param.param_str
    # The graph gives every layer its net's phase, as Caffe's Net::Init does.
    layer.phase = int(node.param.phase) if node.param.HasField("phase") else TEST
    return layer


def call_layer(layer: Any, method: str, *args: Any) -> None:
    """Run one of the user's methods; whatever it raises becomes one ValueError line."""
    try:
        getattr(layer, method)(*args)
    except Exception as exc:  # the user's code
        name = type(layer).__name__
        raise ValueError(f"{name}.{method} raised {type(exc).__name__}: {exc}") from None


def _replacement_row_set(node: Node) -> bool:
    """A known class's rows are a set when its built-in replacement's are (Proposal)."""
    known = replacement(node)
    decide = facts(known.type).row_set if known is not None else None
    return bool(decide and decide(known))


@register("Python", "shape")
def _python(node: Node, inputs: list[Shape]) -> LayerShapes:
    known = replacement(node)
    if known is not None:
        entry = builtin_entry(known.type, "shape")
        assert entry is not None
        return entry.fn(known, inputs)
    from ..pycaffe import Blob

    layer = user_layer(node)
    bottom = [Blob(shape) for shape in inputs]
    top = [Blob((1,)) for _ in node.outputs]
    call_layer(layer, "setup", bottom, top)
    call_layer(layer, "reshape", bottom, top)
    return LayerShapes([tuple(t.shape) for t in top], [])


def _input_values(node: Node, bottom: int, shape: Shape, image: Shape | None, rng) -> np.ndarray:
    known = replacement(node)
    if known is None:
        return None  # type: ignore[return-value]
    make = facts(known.type).input_values
    return make(known, bottom, shape, image, rng) if make is not None else None


describe(
    "Python",
    param_message="python_param",
    bottoms=(0, None),
    tops=(0, None),
    varying_rows=True,
    row_set=_replacement_row_set,
    input_values=_input_values,
    mixes_batch=lambda node, shape: True,
)
