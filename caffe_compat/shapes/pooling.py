"""Shape rule for Pooling: Caffe's ceil rounding and last-window rule (see geometry.py)."""

from __future__ import annotations

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from .geometry import pool_geometry


@register("Pooling", "shape")
def _pooling(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    if len(shape) != 4:
        raise ValueError(f"pooling needs a 4-D input, got {list(shape)}")
    geom = pool_geometry(node.param.pooling_param, shape[2], shape[3])
    tops = [(shape[0], shape[1], *geom.out)] * len(node.outputs)
    if len(tops) > 1 and geom.method != caffe_pb2.PoolingParameter.MAX:
        raise ValueError("a second top (the argmax mask) exists only for MAX pooling")
    return LayerShapes(tops, [])


describe("Pooling", opencv_tested=True)
