"""darknet2caffe's pooling rule (odd kernel - stride: one more window), settled by the loader
only where the net's shapes agree under it (shapes/pooling.py, geometry.pool_geometry)."""

from __future__ import annotations

import pytest

from caffe_compat.errors import CaffeCompatError
from caffe_compat.ir.load import load_net_text
from caffe_compat.proto import caffe_pb2
from caffe_compat.shapes.geometry import pool_geometry


def pooling(**fields) -> caffe_pb2.PoolingParameter:
    return caffe_pb2.PoolingParameter(pool=caffe_pb2.PoolingParameter.MAX, **fields)


def test_extra_window_when_kernel_minus_stride_is_odd():
    """13 x 13, kernel 2 stride 1: BVLC's 12, the fork's 13 (windows clipped at the end);
    kernel 2 stride 2 (even difference) is unchanged; kernel_h decides for both axes."""
    assert pool_geometry(pooling(kernel_size=2, stride=1), 13, 13).out == (12, 12)
    geom = pool_geometry(pooling(kernel_size=2, stride=1, odd_span_extra=True), 13, 13)
    assert geom.out == (13, 13) and geom.pad_end == (1, 1)
    assert pool_geometry(pooling(kernel_size=2, stride=2, odd_span_extra=True), 26, 26).out == (
        13,
        13,
    )
    both = pooling(kernel_h=2, kernel_w=3, stride_h=1, stride_w=1, odd_span_extra=True)
    assert pool_geometry(both, 5, 5).out == (5, 4)


def tiny_route(kernel: int, stride: int) -> str:
    """yolov3-tiny's shape: a pooled map concatenated with the unpooled one (4 x 4)."""
    return (
        'layer { name: "in" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n"
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
        f"pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} }} }}\n"
        'layer { name: "route" type: "Concat" bottom: "pool" bottom: "data" top: "route" }\n'
    )


def test_settled_where_only_the_fork_rule_agrees():
    loaded = load_net_text(tiny_route(2, 1))
    assert loaded.graph.node("pool").param.pooling_param.odd_span_extra
    assert loaded.graph.shapes["route"] == (1, 4, 4, 4)
    assert any("darknet2caffe" in note for note in loaded.dialects)


def test_not_settled_where_it_does_not_help():
    with pytest.raises(CaffeCompatError, match="differ off axis 1"):
        load_net_text(tiny_route(3, 2))  # 4 -> 2 (BVLC) or 3 (fork): neither is 4
