"""SPP in float64: each level is Caffe's Pooling (caffe_compat.reference.pooling) on the
parameters SPPLayer writes (caffe_compat.shapes.spp), flattened and concatenated."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import register
from ..shapes.geometry import pool_geometry
from ..shapes.spp import spp_levels
from ._base import Arrays, LayerContext
from .pooling import ave_pool, max_pool


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
