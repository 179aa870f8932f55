"""SPP in float64: each level is Caffe's Pooling (caffe_compat.reference.pooling) on the
parameters SPPLayer writes (caffe_compat.shapes.spp), flattened and concatenated."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import register
from ..shapes.geometry import pool_geometry
from ..shapes.spp import spp_levels
from ._base import Arrays, BackwardContext, Grads, LayerContext
from .pooling import ave_pool, ave_pool_backward, max_pool, max_pool_backward


@register("SPP", "reference")
def _spp(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    levels = spp_levels(node.param.spp_param, x.shape[2], x.shape[3])
    tops = []
    for param, _ in levels:
        geom = pool_geometry(param, x.shape[2], x.shape[3])
        if param.pool == caffe_pb2.PoolingParameter.MAX:
            tops.append(max_pool(x, geom)[0])
        else:
            tops.append(ave_pool(x, geom))
    if len(tops) == 1:
        return tops
    return [np.concatenate([t.reshape(len(x), -1) for t in tops], axis=1)]


@register("SPP", "reference_backward")
def _spp_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    """SPPLayer::Backward_cpu: the concatenated diff split back per level (Split), each level's
    Pooling backward, and the sum of them into the bottom."""
    (x,), g = inputs, top_diffs[0]
    levels = spp_levels(node.param.spp_param, x.shape[2], x.shape[3])
    diff = np.zeros(x.shape)
    start = 0
    for param, (oh, ow) in levels:
        geom = pool_geometry(param, x.shape[2], x.shape[3])
        width = x.shape[1] * oh * ow
        part = g if len(levels) == 1 else g[:, start : start + width]
        part = part.reshape(x.shape[0], x.shape[1], oh, ow)
        start += width
        if param.pool == caffe_pb2.PoolingParameter.MAX:
            diff += max_pool_backward(part, max_pool(x, geom)[1], x.shape)
        else:
            diff += ave_pool_backward(part, geom, x.shape)
    return [diff], []
