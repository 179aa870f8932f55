"""``type: "Python"`` layers: the user's own ``caffe.Layer`` subclass named by ``python_param``
(``module``, ``layer``, ``param_str``), as BVLC Caffe's ``PythonLayer`` runs it.

Known classes are replaced by a built-in type that every back end (ONNX included) has:
py-faster-rcnn's ``rpn.proposal_layer.ProposalLayer`` becomes ``Proposal`` (its ``param_str``
gives ``feat_stride`` and ``scales``; the rest are py-faster-rcnn's TEST settings, as OpenCV 4
reads such a net); ENet's ``spatial_dropout.SpatialDropoutLayer`` (caffe-enet's
python/spatial_dropout.py), whose ``param_str`` ``{'phase': 'TEST', 'p': P}`` makes its forward
``top = bottom / (1 - P)`` whatever the net's phase, becomes ``Power`` with that scale (a
``'TRAIN'`` one drops random channels: the user's module is needed). A data layer without
bottoms is fed by inference graphs instead of run (the ``feedable`` fact): fcn.berkeleyvision.org's
dataset readers always, any other when ``--input-shape`` names its tops.

Any other class is imported (``import caffe`` inside it resolves to caffe_compat.pycaffe while
it loads) and constructed as Caffe does: ``cls(layer_param)``, then ``param_str`` and ``phase``
(the net's; TEST for a deploy net) set, ``setup`` and ``reshape`` called on blobs of the
bottoms' shapes; the tops' shapes are what ``reshape`` left, and the parameter blobs are those
``setup`` added (``self.blobs.add_blob``), holding what it wrote. That instance is the node's
``state``: set up once per net, as Caffe's Net::Init does, and the one the PyTorch back end and
pycaffe run (``reshape`` and ``forward`` on every run). The float64 reference sets up a fresh
instance on float64 blobs. ONNX export refuses such a layer.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from ..errors import NetDefinitionError
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


def _as_proposal(node: Node) -> Node | None:
    if len(node.inputs) != 3:
        return None  # another fork's class by that name (FPN's: a pair of bottoms per level)
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


def _as_spatial_dropout(node: Node) -> Node | None:
    """ENet's spatial dropout outside TRAIN: its forward scales by 1 / (1 - p) (the phase is
    the one its param_str names; the layer overwrites ``self.phase`` with it)."""
    values = _param_dict(node.param.python_param.param_str, "SpatialDropoutLayer")
    if values.get("phase") == "TRAIN":
        return None
    if len(node.inputs) != 1 or len(node.outputs) != 1:
        raise ValueError("SpatialDropoutLayer takes one bottom and gives one top")
    try:
        p = float(values["p"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"SpatialDropoutLayer needs a number p in param_str, got {values}"
        ) from None
    if not 0 < p < 1:
        raise ValueError(f"SpatialDropoutLayer: p need to be between 0 and 1, got {p}")
    param = caffe_pb2.LayerParameter()
    param.CopyFrom(node.param)
    param.type = "Power"
    param.ClearField("python_param")
    param.power_param.scale = 1.0 / (1.0 - p)
    return Node(node.name, "Power", param, node.inputs, node.outputs, node.blobs, node.line)


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


# (module, class) -> the built-in node that replaces it (None: not in this configuration)
KNOWN: dict[tuple[str, str], Callable[[Node], Node | None]] = {
    ("rpn.proposal_layer", "ProposalLayer"): _as_proposal,
    ("spatial_dropout", "SpatialDropoutLayer"): _as_spatial_dropout,
    ("SSH.layers.proposal_layer", "ProposalLayer"): _as_ssh_proposal,
}


# Data layers of fcn.berkeleyvision.org: each reads an image (and its labels) from a dataset on
# disk; the first top is the image, 1 x C x H x W, mean-subtracted BGR, H and W the image's.
DATA_SOURCES = {
    ("voc_layers", "VOCSegDataLayer"),
    ("voc_layers", "SBDDSegDataLayer"),
    ("nyud_layers", "NYUDSegDataLayer"),
    ("siftflow_layers", "SIFTFlowSegDataLayer"),
    ("pascalcontext_layers", "PASCALContextSegDataLayer"),
}


def _feedable(layer: caffe_pb2.LayerParameter, given: Mapping[str, Any]) -> bool:
    """A data source (no bottoms) fed instead of run: a known dataset reader, or one whose
    tops the caller gives shapes."""
    if layer.bottom or not layer.top:
        return False
    p = layer.python_param
    return (p.module, p.layer) in DATA_SOURCES or any(top in given for top in layer.top)


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
        feed = ""
        if not node.inputs and node.outputs:  # a data source: its tops can be fed instead
            tops = ", ".join(node.param.top)
            feed = (
                f", or feed its tops ({tops}) instead: --input-shape "
                f"{node.param.top[0]}=N,C,H,W (a shape for each top to feed)"
            )
        raise ValueError(
            f"python_param.module {p.module!r} cannot be imported ({type(exc).__name__}: {exc}); "
            f"put its folder on PYTHONPATH, as Caffe needs{feed}"
        ) from None
    finally:
        if not installed:
            pycaffe.uninstall()
    cls = getattr(module, p.layer, None)
    if not isinstance(cls, type):
        raise ValueError(f"module {p.module!r} has no class {p.layer!r}")
    return cls


def user_layer(node: Node, blobs: Callable[[], list] | None = None) -> Any:
    """A fresh instance, as Caffe's ``PythonLayer`` constructor makes it; ``blobs`` makes the
    list its ``self.blobs`` starts as (pycaffe's BlobVec when not given)."""
    layer = user_class(node)(node.param)
    if blobs is not None:
        layer.blobs = blobs()
    layer.param_str = node.param.python_param.param_str
    # The graph gives every layer its net's phase, as Caffe's Net::Init does.
    layer.phase = int(node.param.phase) if node.param.HasField("phase") else TEST
    return layer


# Within ``users_exceptions()``: the exceptions the user's methods raised, to re-raise as is.
_RAISED: ContextVar[list[BaseException] | None] = ContextVar("python_layer_raised", default=None)


@contextmanager
def users_exceptions() -> Iterator[None]:
    """Let what a Python layer's method raises leave this scope as itself, as Caffe's
    boost.python layer lets it through to the caller of ``caffe.Net`` or ``forward`` (pycaffe);
    outside such a scope (the CLI) it is one line naming the layer and the class."""
    raised: list[BaseException] = []
    token = _RAISED.set(raised)
    try:
        yield
    except Exception:
        if raised:
            raise raised[-1]  # noqa: B904 - the user's own exception, its traceback kept
        raise
    finally:
        _RAISED.reset(token)


def call_layer(layer: Any, method: str, *args: Any) -> None:
    """Run one of the user's methods; whatever it raises becomes one line naming the layer and
    the class (NetDefinitionError: a bug in the user's layer, not here)."""
    try:
        getattr(layer, method)(*args)
    except Exception as exc:  # the user's code
        raised = _RAISED.get()
        if raised is not None:
            raised.append(exc)
        name = type(layer).__name__
        param = getattr(layer, "layer_param", None)
        raise NetDefinitionError(
            f"{name}.{method} raised {type(exc).__name__}: {exc}",
            layer=getattr(param, "name", None) or None,
            layer_type="Python",
        ) from None


def set_up(node: Node, bottom: list[Any], top: list[Any]) -> Any:
    """The node's instance (``node.state``), made and set up on the first call; every call
    runs its ``reshape`` on ``bottom`` and ``top``."""
    layer = node.state
    if layer is None:
        layer = user_layer(node)
        call_layer(layer, "setup", bottom, top)
        node.state = layer
    call_layer(layer, "reshape", bottom, top)
    return layer


def param_shapes(layer: Any) -> list[Shape]:
    """The shapes of the parameter blobs the user's layer holds."""
    try:
        return [tuple(int(d) for d in blob.shape) for blob in layer.blobs]
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"{type(layer).__name__}.blobs is not a list of blobs ({exc})") from None


def _replacement_row_set(node: Node) -> bool:
    """A known class's rows are a set when its built-in replacement's are (Proposal)."""
    known = replacement(node)
    decide = facts(known.type).row_set if known is not None else None
    return bool(decide and decide(known))


def _replacement_rows(node: Node, inputs: list[Shape]) -> int:
    """A known class's row bound is its built-in replacement's (Proposal's ``post_nms_topn``);
    user code's: one, as its setup reports."""
    known = replacement(node)
    bound = facts(known.type).row_bound if known is not None else None
    return bound(known, inputs) if bound is not None else 1


def _replacement_error_gain(node: Node, value) -> dict[int, float]:
    """A known class's error gain is its built-in replacement's (Proposal's boxes)."""
    known = replacement(node)
    gain = facts(known.type).error_gain if known is not None else None
    return gain(known, value) if gain is not None else {}


@register("Python", "shape")
def _python(node: Node, inputs: list[Shape]) -> LayerShapes:
    known = replacement(node)
    if known is not None:
        entry = builtin_entry(known.type, "shape")
        assert entry is not None
        return entry.fn(known, inputs)
    from ..pycaffe import Blob

    bottom = [Blob(shape) for shape in inputs]
    top = [Blob((1,)) for _ in node.outputs]
    layer = set_up(node, bottom, top)
    return LayerShapes([tuple(t.shape) for t in top], param_shapes(layer))


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
    row_bound=_replacement_rows,
    row_set=_replacement_row_set,
    error_gain=_replacement_error_gain,
    input_values=_input_values,
    feedable=_feedable,
    user_instance=True,
    mixes_batch=lambda node, shape: True,
)
