"""Fork messages written at field numbers BVLC holds, moved to their fields by the layer's type,
and BN's two meanings told apart (caffe_compat/io/dialects.py, docs/forks.md)."""

from __future__ import annotations

import numpy as np

from caffe_compat.io.dialects import rescue, settle
from caffe_compat.proto import caffe_pb2


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field as the fork's binary writes it."""
    key, out = (number << 3) | 2, bytearray()
    for value in (key, len(payload)):
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def _layer(kind: str, number: int, message) -> caffe_pb2.LayerParameter:
    head = caffe_pb2.LayerParameter(name="l", type=kind).SerializeToString()
    return caffe_pb2.LayerParameter.FromString(head + _field(number, message.SerializeToString()))


def test_segnet_upsample_at_137_parses_as_embed_param_and_moves():
    layer = _layer("Upsample", 137, caffe_pb2.UpsampleParameter(upsample_h=40, upsample_w=30))
    assert layer.HasField("embed_param") and not layer.HasField("upsample_param")
    net = caffe_pb2.NetParameter(layer=[layer])
    notes = settle(net)
    moved = net.layer[0]
    assert not moved.HasField("embed_param")
    assert (moved.upsample_param.upsample_h, moved.upsample_param.upsample_w) == (40, 30)
    assert notes and "137" in notes[0]


def test_deeplab_interp_at_143_parses_as_input_param_and_moves():
    layer = _layer("Interp", 143, caffe_pb2.InterpParameter(zoom_factor=8, pad_end=-1))
    net = caffe_pb2.NetParameter(layer=[layer])
    settle(net)
    p = net.layer[0].interp_param
    assert (p.zoom_factor, p.pad_end) == (8, -1) and not net.layer[0].HasField("input_param")


def test_pspnet_bn_at_152_is_an_unknown_field_until_moved():
    bn = caffe_pb2.BNParameter(frozen=True, eps=1e-4)
    layer = _layer("BN", 152, bn)
    assert not layer.HasField("bn_param")
    net = caffe_pb2.NetParameter(layer=[layer])
    settle(net)
    p = net.layer[0].bn_param
    assert p.frozen and np.isclose(p.eps, 1e-4)
    assert net.layer[0].SerializeToString().count(bn.SerializeToString()) == 1


def test_yjxiong_momentum_at_3_stays_unknown_not_bn_mode():
    """yjxiong's momentum (a float at 3) has another wire type than caffe-segnet's bn_mode."""
    raw = bytes([0x1D]) + np.float32(0.95).tobytes()  # field 3, 32-bit
    p = caffe_pb2.BNParameter.FromString(raw)
    assert not p.HasField("bn_mode")


def test_four_blobs_make_a_plain_bn_pspnets():
    net = caffe_pb2.NetParameter(layer=[caffe_pb2.LayerParameter(name="bn", type="BN")])
    notes = settle(net, {"bn": 4})
    assert net.layer[0].bn_param.HasField("eps") and "4 blobs" in notes[0]
    two = caffe_pb2.NetParameter(layer=[caffe_pb2.LayerParameter(name="bn", type="BN")])
    assert settle(two, {"bn": 2}) == [] and not two.layer[0].bn_param.HasField("eps")


def test_rescue_leaves_a_layer_without_the_fork_field_alone():
    layer = caffe_pb2.LayerParameter(name="e", type="Embed")
    layer.embed_param.num_output = 3
    before = layer.SerializeToString()
    assert not rescue(layer, "upsample_param", unknown=(152,))
    assert layer.SerializeToString() == before


def test_segnet_dense_image_data_at_138_parses_as_tile_param_and_moves():
    layer = _layer("DenseImageData", 138, caffe_pb2.DenseImageDataParameter(batch_size=4))
    net = caffe_pb2.NetParameter(layer=[layer])
    settle(net)
    assert net.layer[0].dense_image_data_param.batch_size == 4
    assert not net.layer[0].HasField("tile_param")


def test_happynear_bn_at_200_parses_as_annotated_data_param_and_moves():
    layer = _layer("BN", 200, caffe_pb2.BNParameter(frozen=True))
    assert layer.HasField("annotated_data_param")
    net = caffe_pb2.NetParameter(layer=[layer])
    settle(net)
    assert net.layer[0].bn_param.frozen and not net.layer[0].HasField("annotated_data_param")
