"""Shape rules for the fully connected and reshaping layers."""

from __future__ import annotations

import math

from ..ir.graph import Node, Shape
from ..registry import LayerShapes, register
from .geometry import canonical_axis


@register("InnerProduct", "shape")
def _inner_product(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.inner_product_param
    if not p.HasField("num_output") or p.num_output <= 0:
        raise ValueError("num_output must be set and positive")
    axis = canonical_axis(int(p.axis), len(shape))
    k = math.prod(shape[axis:])
    n = int(p.num_output)
    params: list[Shape] = [(k, n) if p.transpose else (n, k)]
    if p.bias_term:
        params.append((n,))
    return LayerShapes([(*shape[:axis], n)], params)


@register("Flatten", "shape")
def _flatten(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.flatten_param
    start = canonical_axis(int(p.axis), len(shape))
    end = canonical_axis(int(p.end_axis), len(shape), "end_axis")
    if end < start:
        raise ValueError(f"end_axis {p.end_axis} comes before axis {p.axis}")
    flat = math.prod(shape[start : end + 1])
    return LayerShapes([(*shape[:start], flat, *shape[end + 1 :])], [])


@register("Concat", "shape")
def _concat(node: Node, inputs: list[Shape]) -> LayerShapes:
    p = node.param.concat_param
    first = inputs[0]
    if p.HasField("concat_dim") and not p.HasField("axis"):
        axis = int(p.concat_dim)
    else:
        axis = canonical_axis(int(p.axis), len(first))
    for other in inputs[1:]:
        if len(other) != len(first) or any(
            a != b for i, (a, b) in enumerate(zip(first, other)) if i != axis
        ):
            raise ValueError(f"bottoms {list(first)} and {list(other)} differ off axis {axis}")
    total = sum(s[axis] for s in inputs)
    return LayerShapes([(*first[:axis], total, *first[axis + 1 :])], [])


@register("Split", "shape")
def _split(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    return LayerShapes([shape] * len(node.outputs), [])
