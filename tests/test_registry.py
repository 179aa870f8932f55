"""The layer registry: user overrides stack on built-ins, and preflight lists every gap at once."""

from __future__ import annotations

import pytest

from caffe_compat import registry
from caffe_compat.errors import UnsupportedLayersError
from caffe_compat.ir.graph import Graph, Node
from caffe_compat.proto import caffe_pb2


def node(name: str, kind: str) -> Node:
    return Node(name, kind, caffe_pb2.LayerParameter(name=name, type=kind), [], [])


def test_user_registration_overrides_then_unregister_restores():
    builtin = registry.lookup("ReLU", "shape")
    assert builtin is not None and builtin.builtin

    @registry.register("ReLU", "shape")
    def mine(node, inputs):
        return registry.LayerShapes(inputs, [])

    try:
        assert registry.lookup("ReLU", "shape").fn is mine
    finally:
        registry.unregister("ReLU", "shape")
    assert registry.lookup("ReLU", "shape") is builtin


def test_unknown_backend_and_empty_unregister():
    with pytest.raises(ValueError, match="unknown back end"):
        registry.register("X", "tensorflow")
    with pytest.raises(KeyError):
        registry.unregister("NoSuchType", "shape")


def test_preflight_lists_every_unsupported_layer_in_one_error():
    graph = Graph(
        "g",
        {},
        [node("a1", "Frobnicate"), node("ok", "ReLU"), node("a2", "Frobnicate"), node("b", "Zap")],
        [],
    )
    with pytest.raises(UnsupportedLayersError) as caught:
        registry.preflight(graph, ["shape", "onnx"])
    message = str(caught.value)
    assert "Frobnicate [shape]: a1, a2" in message and "Zap [onnx]: b" in message
    assert len(caught.value.missing) == 6  # 3 layers x 2 back ends
    assert "\n" not in message


def test_check_reports_an_unsupported_setting():
    pool = node("p", "Pooling")
    pool.param.pooling_param.pool = caffe_pb2.PoolingParameter.STOCHASTIC
    missing = registry.missing_support([pool], ["torch", "onnx"])
    assert [m.backend for m in missing] == ["torch", "onnx"]
    assert all("STOCHASTIC" in m.detail or "deterministic" in m.detail for m in missing)
