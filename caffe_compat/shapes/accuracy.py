"""Shape rule and facts of Accuracy (accuracy_layer.cpp): a scalar, and per class on request."""

from __future__ import annotations

import math

from ..ir.graph import Node, Shape
from ..registry import LayerShapes, describe, register
from .geometry import canonical_axis


@register("Accuracy", "shape")
def _accuracy(node: Node, inputs: list[Shape]) -> LayerShapes:
    scores, labels = inputs
    p = node.param.accuracy_param
    if int(p.top_k) > math.prod(scores) // max(1, math.prod(labels)):
        raise ValueError("top_k must be less than or equal to the number of classes")
    axis = canonical_axis(int(p.axis), len(scores))
    outer, inner = math.prod(scores[:axis]), math.prod(scores[axis + 1 :])
    if outer * inner != math.prod(labels):
        raise ValueError(
            f"{math.prod(labels)} labels for {outer * inner} predictions; with the label axis "
            f"{axis} of a {list(scores)} bottom the label count must be {outer * inner}"
        )
    return LayerShapes([(), (scores[axis],)][: len(node.outputs)], [])


def _no_backward(node: Node, bottom: int) -> str | None:
    return "Accuracy has no backward (Caffe: Not Implemented Yet; it cannot be used as a loss)"


describe("Accuracy", role="training", bottoms=2, tops=(1, 2), no_backward=_no_backward)
