"""``type: "Python"`` layers in ONNX: only a known class (py-faster-rcnn's proposal layer, ENet's
spatial dropout outside TRAIN) has an ONNX form, its built-in replacement's; the converter's
check refuses any other, naming the layer and its class, before anything is exported."""

from __future__ import annotations

import dataclasses

from ...ir.graph import Node
from ...registry import builtin_entry, register
from ...shapes.python_layer import KNOWN, replacement
from ._base import OnnxContext, OnnxOut


def _no_onnx(node: Node) -> str | None:
    """user classes (replaced: py-faster-rcnn's proposal layer, ENet's TEST spatial dropout)."""
    if replacement(node) is not None:
        return None
    p = node.param.python_param
    known = ", ".join(f"{m}.{c}" for m, c in KNOWN)
    return (
        f"Python layer {p.module}.{p.layer} runs user code, which ONNX cannot hold (only "
        f"by a built-in type: {known}); convert --to torch and caffe_compat.pycaffe run it"
    )


@register("Python", "onnx", check=_no_onnx)
def _python(node: Node, ctx: OnnxContext) -> OnnxOut:
    known = replacement(node)
    if known is None:
        raise ValueError(_no_onnx(node))
    entry = builtin_entry(known.type, "onnx")
    assert entry is not None
    return entry.fn(known, dataclasses.replace(ctx, node=known))
