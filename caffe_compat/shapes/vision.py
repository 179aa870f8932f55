"""Shape rules for the sliding-window layers: Convolution, Deconvolution, Pooling, LRN."""

from __future__ import annotations

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, register
from .geometry import canonical_axis, conv_geometry, pool_geometry


def _conv_common(node: Node, inputs: list[Shape]) -> tuple[Shape, int, int, tuple[int, ...]]:
    p = node.param.convolution_param
    (shape,) = set(inputs) if len(set(inputs)) == 1 else (None,)
    if shape is None:
        raise ValueError("all bottoms of a convolution must have the same shape")
    axis = canonical_axis(int(p.axis), len(shape))
    channels = shape[axis]
    group = int(p.group)
    if group <= 0 or channels % group:
        raise ValueError(f"input channels {channels} are not divisible by group {group}")
    if not p.HasField("num_output") or p.num_output <= 0:
        raise ValueError("num_output must be set and positive")
    if p.num_output % group:
        raise ValueError(f"num_output {p.num_output} is not divisible by group {group}")
    return shape, axis, group, shape[axis + 1 :]


def _conv_shapes(node: Node, inputs: list[Shape], transposed: bool) -> LayerShapes:
    """Convolution and Deconvolution: one geometry, mirrored output size and weight layout."""
    p = node.param.convolution_param
    shape, axis, group, spatial = _conv_common(node, inputs)
    geom = conv_geometry(p, len(spatial))
    out_spatial = geom.deconv_output(spatial) if transposed else geom.output(spatial)
    if any(s <= 0 for s in out_spatial):
        raise ValueError(f"output size {list(out_spatial)} is not positive")
    n_out = int(p.num_output)
    if transposed:  # Caffe stores deconvolution weights as (C_in, C_out / group, k...)
        weight: Shape = (shape[axis], n_out // group, *geom.kernel)
    else:
        weight = (n_out, shape[axis] // group, *geom.kernel)
    params: list[Shape] = [weight, (n_out,)] if p.bias_term else [weight]
    top = (*shape[:axis], n_out, *out_spatial)
    return LayerShapes([top] * len(inputs), params)


@register("Convolution", "shape")
def _convolution(node: Node, inputs: list[Shape]) -> LayerShapes:
    return _conv_shapes(node, inputs, transposed=False)


@register("Deconvolution", "shape")
def _deconvolution(node: Node, inputs: list[Shape]) -> LayerShapes:
    return _conv_shapes(node, inputs, transposed=True)


def _pooling_check(node: Node) -> str | None:
    if node.param.pooling_param.pool == caffe_pb2.PoolingParameter.STOCHASTIC:
        return "STOCHASTIC pooling samples at random in training; no deterministic equivalent"
    return None


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


@register("LRN", "shape")
def _lrn(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.lrn_param
    if len(shape) != 4:
        raise ValueError(f"LRN needs a 4-D input, got {list(shape)}")
    if p.local_size % 2 == 0:
        raise ValueError(f"local_size {p.local_size} must be odd")
    return LayerShapes([shape], [])
