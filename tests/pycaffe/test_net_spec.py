"""caffe.NetSpec / layers / params: prototxt written in Python, as BVLC's net_spec builds it."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from caffe_compat.proto import caffe_pb2

LENET_TEXT = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 } inner_product_param { num_output: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


def test_netspec_builds_the_same_net_parameter(caffe):
    L, P = caffe.layers, caffe.params
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 8, 8]))
    n.conv1 = L.Convolution(n.data, kernel_size=3, num_output=2, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool1, num_output=3, param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.prob = L.Softmax(n.ip1)
    expected = text_format.Parse(LENET_TEXT, caffe_pb2.NetParameter())
    assert n.to_proto() == expected
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX


def test_netspec_automatic_names_and_ntop(caffe):
    L = caffe.layers
    data, label = L.DummyData(ntop=2, shape=[dict(dim=[2, 3]), dict(dim=[2])])
    loss = L.SoftmaxWithLoss(L.InnerProduct(data, num_output=4), label)
    net = caffe.to_proto(loss)
    assert [(x.name, x.type, list(x.bottom), list(x.top)) for x in net.layer] == [
        ("DummyData1", "DummyData", [], ["DummyData1", "DummyData2"]),
        ("InnerProduct1", "InnerProduct", ["DummyData1"], ["InnerProduct1"]),
        (
            "SoftmaxWithLoss1",
            "SoftmaxWithLoss",
            ["InnerProduct1", "DummyData2"],
            ["SoftmaxWithLoss1"],
        ),
    ]
    assert net.layer[1].inner_product_param.num_output == 4
    with pytest.raises(TypeError, match="Convolution input 0 is not a Top"):
        L.Convolution(np.zeros(3))


def test_netspec_net_runs(caffe, tmp_path):
    L = caffe.layers
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4]))
    n.out = L.Power(n.data, power=2, scale=3)
    path = tmp_path / "spec.prototxt"
    path.write_text(str(n.to_proto()), encoding="utf-8")
    net = caffe.Net(str(path), caffe.TEST)
    out = net.forward(data=np.array([[1, 2, 3, 4]], np.float32))["out"]
    np.testing.assert_allclose(out, [[9, 36, 81, 144]])
