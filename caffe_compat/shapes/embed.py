"""Shape rule for Embed: each bottom value indexes a row of a learned K x N table."""

from __future__ import annotations

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register


@register("Embed", "shape")
def _embed(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.embed_param
    if p.num_output <= 0 or p.input_dim <= 0:
        raise ValueError("num_output and input_dim must be set and positive")
    n, k = int(p.num_output), int(p.input_dim)
    params: list[Shape] = [(k, n)] + ([(n,)] if p.bias_term else [])
    return LayerShapes([(*shape, n)], params)


def _indices_have_no_diff(node: Node, bottom: int) -> str | None:
    return "Can't backpropagate to EmbedLayer input (its bottom holds row indices)"


def _fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    p = layer.embed_param
    return [p.weight_filler, p.bias_filler] if p.bias_term else [p.weight_filler]


def _rows(node: Node) -> int:
    """Embed reads each bottom value as a row index of its input_dim x N table."""
    return int(node.param.embed_param.input_dim)


describe(
    "Embed",
    param_message="embed_param",
    bias_term="bias_term",
    fillers=_fillers,
    index_rows=_rows,
    no_backward=_indices_have_no_diff,
    bottoms=1,
    tops=1,
)
