"""C3D's 3-D layers read from the fork's own net formats (v1.0: V1 enum types, the 3-D settings in
convolution_param/pooling_param, VIDEO_DATA with image_data_param; v1.1: type strings and its own
messages), their shape rules (C3D's rounding) and what they refuse."""

from __future__ import annotations

import numpy as np
import pytest
from _wire_bytes import field, varint
from google.protobuf import text_format

from caffe_compat.errors import NetDefinitionError
from caffe_compat.io.caffemodel import read_caffemodel
from caffe_compat.io.dialects import settle
from caffe_compat.io.upgrade import upgrade_net
from caffe_compat.ir.load import load_net
from caffe_compat.proto import caffe_pb2

V1_NET = """name: "c3d_v1"
layers { name: "data" type: VIDEO_DATA top: "data" top: "label"
  image_data_param { source: "list.txt" use_image: true batch_size: 2 crop_size: 8
    new_height: 10 new_width: 12 new_length: 4 show_data: 0 } }
layers { name: "conv1a" type: CONVOLUTION3D bottom: "data" top: "conv1a" blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 3 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1 } }
layers { name: "relu1a" type: RELU bottom: "conv1a" top: "conv1a" }
layers { name: "pool1" type: POOLING3D bottom: "conv1a" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 temporal_stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc"
  inner_product_param { num_output: 5 } }
"""


def test_c3d_v1_text_net(tmp_path):
    path = tmp_path / "c3d.prototxt"
    path.write_text(V1_NET)
    loaded = load_net(path)
    graph = loaded.graph
    assert loaded.prototxt_format == "V1"
    assert [n.type for n in graph.nodes] == ["Convolution3D", "ReLU", "Pooling3D", "InnerProduct"]
    assert graph.inputs["data"] == (2, 3, 4, 8, 8)  # batch x 3 x new_length x crop x crop
    assert graph.shapes["conv1a"] == (2, 3, 4, 8, 8)
    assert graph.shapes["pool1"] == (2, 3, 2, 4, 4)
    assert loaded.inference.params["conv1a"] == [(3, 3, 3, 3, 3), (1, 1, 1, 1, 3)]
    assert loaded.inference.params["fc"] == [(5, 3 * 2 * 4 * 4), (5,)]
    p = graph.node("conv1a").param.convolution3d_param
    assert (p.kernel_depth, p.temporal_pad, p.pad, p.num_output) == (3, 1, 1, 3)
    # The V1 upgrade itself moves the named settings (pycaffe and training read nets so too).
    net = caffe_pb2.NetParameter()
    text_format.Merge(V1_NET, net)
    upgrade_net(net)
    conv, pool = net.layer[1], net.layer[3]
    assert conv.convolution3d_param.kernel_depth == 3 and not conv.HasField("convolution_param")
    assert pool.pooling3d_param.temporal_stride == 2 and not pool.HasField("pooling_param")


def _binary_c3d_net() -> bytes:
    """A net as C3D v1.0 writes it: type 30 (its CONVOLUTION3D, BVLC's ARGMAX) with its own
    ConvolutionParameter numbering, type 31 (POOLING3D, BVLC's THRESHOLD) likewise."""
    net = caffe_pb2.NetParameter(name="c3d")
    conv = net.layers.add(name="conv", type=caffe_pb2.V1LayerParameter.ARGMAX)
    conv.bottom.append("data")
    conv.top.append("conv")
    c3d_conv = caffe_pb2.Convolution3DParameter(
        num_output=2, kernel_size=3, kernel_depth=3, pad=1, temporal_pad=1, stride=2
    )
    c3d_conv.weight_filler.type = "gaussian"
    conv.convolution_param.MergeFromString(c3d_conv.SerializeToString())
    pool = net.layers.add(name="pool", type=caffe_pb2.V1LayerParameter.THRESHOLD)
    pool.bottom.append("conv")
    pool.top.append("pool")
    c3d_pool = caffe_pb2.Pooling3DParameter(kernel_size=2, kernel_depth=2, temporal_stride=2)
    pool.pooling_param.MergeFromString(c3d_pool.SerializeToString())
    relu = net.layers.add(name="relu", type=caffe_pb2.V1LayerParameter.RELU)
    relu.bottom.append("pool")
    relu.top.append("pool")
    return net.SerializeToString()


def test_c3d_v1_binary_numbers_are_told_apart_from_bvlc():
    net = caffe_pb2.NetParameter.FromString(_binary_c3d_net())
    assert net.layers[0].type == caffe_pb2.V1LayerParameter.ARGMAX  # as BVLC's schema reads it
    upgrade_net(net)
    notes = settle(net)
    assert [layer.type for layer in net.layer] == ["Convolution3D", "Pooling3D", "ReLU"]
    conv, pool = net.layer[0], net.layer[1]
    p = conv.convolution3d_param
    assert (p.num_output, p.kernel_size, p.kernel_depth, p.pad, p.temporal_pad) == (2, 3, 3, 1, 1)
    assert (p.stride, p.temporal_stride, p.weight_filler.type) == (2, 1, "gaussian")
    q = pool.pooling3d_param
    assert (q.kernel_size, q.kernel_depth, q.stride, q.temporal_stride) == (2, 2, 1, 2)
    assert not conv.HasField("convolution_param") and not pool.HasField("pooling_param")
    assert any("binary C3D v1.0 convolution_param" in n for n in notes)
    assert any("binary C3D v1.0 pooling_param" in n for n in notes)


def test_bvlc_argmax_and_threshold_stay_bvlc():
    net = caffe_pb2.NetParameter()
    net.layers.add(name="a", type=caffe_pb2.V1LayerParameter.ARGMAX).argmax_param.top_k = 2
    net.layers.add(name="t", type=caffe_pb2.V1LayerParameter.THRESHOLD)
    net = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    upgrade_net(net)
    assert [layer.type for layer in net.layer] == ["ArgMax", "Threshold"]


def test_c3d_v11_video_data_and_ssd_video_data(tmp_path):
    c3d = (
        'layer { name: "data" type: "VideoData" top: "data" top: "label" '
        "transform_param { crop_size: 112 mean_value: 128 } video_data_param { "
        'source: "list" new_length: 8 sampling_rate: 2 new_height: 128 new_width: 171 '
        "batch_size: 30 } }\n"
        'layer { name: "p" type: "Pooling3D" bottom: "data" top: "p" pooling3d_param { '
        "kernel_size: 7 kernel_depth: 1 stride: 1 temporal_stride: 1 pool: AVE } }"
    )
    path = tmp_path / "c3d.prototxt"
    path.write_text(c3d)
    graph = load_net(path).graph
    assert graph.inputs["data"] == (30, 3, 8, 112, 112)
    assert graph.shapes["p"] == (30, 3, 8, 106, 106)
    ssd = (
        'layer { name: "data" type: "VideoData" top: "data" transform_param { resize_param { '
        "height: 300 width: 300 } } video_data_param { video_type: WEBCAM } }\n"
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }'
    )
    path.write_text(ssd)
    graph = load_net(path, input_shapes={"data": (1, 3, 300, 300)}).graph
    assert graph.inputs["data"] == (1, 3, 300, 300)


@pytest.mark.parametrize(
    ("layer", "shape", "message"),
    [
        ("pool: MAX kernel_size: 2 kernel_depth: 2 pad: 1", (1, 2, 4, 4, 4), "only for average"),
        ("pool: MAX kernel_size: 2 kernel_depth: 2", (1, 2, 4, 4), "5-D"),
        ("pool: MAX kernel_size: 2", (1, 2, 4, 4, 4), "kernel_depth"),
        ("pool: STOCHASTIC kernel_size: 2 kernel_depth: 1", (1, 2, 4, 4, 4), "STOCHASTIC"),
        ("pool: MAX kernel_size: 1 kernel_depth: 1 stride: 3", (1, 2, 1, 5, 5), "no input"),
    ],
)
def test_pooling3d_refusals(tmp_path, layer, shape, message):
    dims = " ".join(f"dim: {d}" for d in shape)
    path = tmp_path / "p.prototxt"
    path.write_text(
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
        f'layer {{ name: "p" type: "Pooling3D" bottom: "data" top: "p" pooling3d_param {{ {layer} }} }}'
    )
    with pytest.raises(NetDefinitionError, match=message):
        load_net(path)


def test_ave_window_wholly_in_the_padding_is_kept(tmp_path):
    # W = 5, kernel 2, stride 2, pad 1: ceil(5 / 2) + 1 = 4 windows; the last starts at 5 (the
    # input's end) and reaches into the padding only: C3D keeps it (BVLC's Pooling drops it).
    path = tmp_path / "p.prototxt"
    path.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 '
        "dim: 1 dim: 5 dim: 5 } } }\n"
        'layer { name: "p" type: "Pooling3D" bottom: "data" top: "p" pooling3d_param { '
        "pool: AVE kernel_size: 2 kernel_depth: 1 stride: 2 pad: 1 } }"
    )
    assert load_net(path).graph.shapes["p"] == (1, 1, 1, 4, 4)


def test_convolution3d_refuses_a_4d_bottom(tmp_path):
    path = tmp_path / "c.prototxt"
    path.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 '
        "dim: 4 dim: 4 } } }\n"
        'layer { name: "c" type: "Convolution3D" bottom: "data" top: "c" convolution3d_param { '
        "num_output: 2 kernel_size: 1 kernel_depth: 1 } }"
    )
    with pytest.raises(NetDefinitionError, match="5-D"):
        load_net(path)


def _c3d_blob(shape: tuple[int, ...], values: np.ndarray) -> bytes:
    """C3D v1.0's BlobProto: num 1, channels 2, length 3, height 4, width 5, packed data 6."""
    dims = b"".join(varint(n << 3) + varint(d) for n, d in zip(range(1, 6), shape))
    return dims + field(6, values.astype("<f4").tobytes()) + field(7, b"")


def test_c3d_v1_caffemodel_blobs(tmp_path):
    """A caffemodel as C3D v1.0 writes it: V1 layers (type 30) holding its 5-D blobs."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((3, 3, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    layer = (
        field(4, b"conv1a")  # V1LayerParameter.name
        + varint(5 << 3)
        + varint(30)  # type: C3D's CONVOLUTION3D
        + field(6, _c3d_blob(weight.shape, weight.ravel()))
        + field(6, _c3d_blob((1, 1, 1, 1, 3), bias))
    )
    model = tmp_path / "c3d.caffemodel"
    model.write_bytes(field(1, b"c3d") + field(2, layer))
    blobs = read_caffemodel(model).blobs["conv1a"]
    assert [b.shape for b in blobs] == [(3, 3, 3, 3, 3), (1, 1, 1, 1, 3)]
    np.testing.assert_array_equal(blobs[0], weight)
    np.testing.assert_array_equal(blobs[1].ravel(), bias)
    path = tmp_path / "c3d.prototxt"
    path.write_text(V1_NET)
    loaded = load_net(path, model, strict=False)
    assert [b.shape for b in loaded.graph.node("conv1a").blobs] == [
        (3, 3, 3, 3, 3),
        (1, 1, 1, 1, 3),
    ]
