"""Shape rule for InnerProduct: flatten from ``axis``, N outputs, W as N x K (K x N transposed)."""

from __future__ import annotations

import math

import numpy as np

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from ._synthesis import rescale_blobs, scale_rows
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


def _fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    c = layer.inner_product_param
    return [c.weight_filler, c.bias_filler] if c.bias_term else [c.weight_filler]


def _rescale(node: Node, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Output n is row n of W (N x K), or column n with ``transpose`` (K x N)."""
    axis = 1 if node.param.inner_product_param.transpose else 0
    return rescale_blobs(node, scale_rows(node.blobs[0], scale, axis), scale, shift)


def _transposed(node: Node) -> str | None:
    if node.param.inner_product_param.transpose:
        return "OpenCV ignores InnerProduct transpose"
    return None


describe(
    "InnerProduct",
    param_message="inner_product_param",
    bias_term="bias_term",
    fillers=_fillers,
    rescale=_rescale,
    channel_axis=-1,
    folds_batchnorm=True,
    opencv_deviation=_transposed,
    opencv_tested=True,
    float32_weights=True,
    bottoms=1,
    tops=1,
)
