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


def padded_copy(node: Node, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
    """The explicitly padded input both back ends build when Caffe's windows are asymmetric
    (ceil rounding; with a large stride the end padding can dwarf the input)."""
    n, c, h, w = in_shapes[0]
    geom = pool_geometry(node.param.pooling_param, h, w)
    (ph, pw), (eh, ew) = geom.pad_begin, geom.pad_end
    if (ph, pw) == (eh, ew) and ph <= geom.kernel[0] // 2 and pw <= geom.kernel[1] // 2:
        return 0
    return n * c * (h + ph + eh) * (w + pw + ew)


def _stochastic_has_no_backward(node: Node, bottom: int) -> str | None:
    if node.param.pooling_param.pool == caffe_pb2.PoolingParameter.STOCHASTIC:
        return "STOCHASTIC pooling has no CPU backward in Caffe (Not Implemented)"
    return None


def _argmax_top(node: Node) -> tuple[int, int] | None:
    """MAX pooling's second top: where in bottom 0's plane each maximum was."""
    p = node.param.pooling_param
    if len(node.outputs) == 2 and p.pool == caffe_pb2.PoolingParameter.MAX:
        return 0, 1
    return None


describe(
    "Pooling",
    opencv_tested=True,
    argmax_top=_argmax_top,
    bottoms=1,
    tops=(1, 2),
    workspace=padded_copy,
    no_backward=_stochastic_has_no_backward,
)
