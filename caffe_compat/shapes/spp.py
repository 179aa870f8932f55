"""Shape rule of BVLC Caffe's ``SPP`` (spatial pyramid pooling, ``spp_layer.cpp``; used by
SPP-net ports and detection nets built on it).

Level ``l`` of ``pyramid_height`` pools the map into ``2^l`` bins per axis with a Pooling layer of
kernel ``ceil(size / 2^l)``, stride = kernel and pad ``(kernel * 2^l - size + 1) / 2`` (integer
division): ``spp_pooling(...)`` writes that PoolingParameter, so every back end runs Caffe's own
Pooling rules on it. With one level the top is that pooling's ``N x C x 1 x 1``; with more, each
level is flattened and the levels concatenated: ``N x C * sum(4^l)`` (fewer where Pooling's
last-window rule drops a bin).
"""

from __future__ import annotations

import math

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from .geometry import pool_geometry

SPP = caffe_pb2.SPPParameter


def spp_pooling(p: caffe_pb2.SPPParameter, level: int, height: int, width: int):
    """SPPLayer::GetPoolingParam for one level."""
    bins = 2**level
    param = caffe_pb2.PoolingParameter()
    for axis, size in (("h", height), ("w", width)):
        kernel = math.ceil(size / bins)
        if kernel <= 0:
            raise ValueError("the input is smaller than the pyramid's bins")
        setattr(param, f"kernel_{axis}", kernel)
        setattr(param, f"stride_{axis}", kernel)
        setattr(param, f"pad_{axis}", (kernel * bins - size + 1) // 2)
    if p.pool == SPP.STOCHASTIC:
        raise ValueError("STOCHASTIC pyramid pooling: Caffe's CPU forward does not implement it")
    param.pool = (
        caffe_pb2.PoolingParameter.MAX if p.pool == SPP.MAX else caffe_pb2.PoolingParameter.AVE
    )
    return param


def spp_levels(p: caffe_pb2.SPPParameter, height: int, width: int):
    """[(PoolingParameter, (bins_h, bins_w))] per level, checked as Pooling checks them."""
    if p.pyramid_height < 1:
        raise ValueError("spp_param.pyramid_height must be at least 1")
    levels = []
    for level in range(p.pyramid_height):
        param = spp_pooling(p, level, height, width)
        if param.pad_h >= param.kernel_h or param.pad_w >= param.kernel_w:
            raise ValueError(
                f"level {level}: pad {param.pad_h}x{param.pad_w} is not below the kernel "
                f"{param.kernel_h}x{param.kernel_w} (Caffe's Pooling CHECK); the input is too small"
            )
        levels.append((param, pool_geometry(param, height, width).out))
    return levels


@register("SPP", "shape")
def _spp(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    if len(shape) != 4:
        raise ValueError(f"SPP reads a 4-D map, not {list(shape)}")
    n, c, h, w = shape
    levels = spp_levels(node.param.spp_param, h, w)
    if len(levels) == 1:
        return LayerShapes([(n, c, *levels[0][1])], [])
    return LayerShapes([(n, c * sum(oh * ow for _, (oh, ow) in levels))], [])


describe("SPP", param_message="spp_param", bottoms=1, tops=1, opencv_tested=False)
