"""V1 <-> V2 layer conversion: every V1 enum type has its V2 name, and V1 -> V2 -> V1 is lossless
for what V1 can hold (the V1 writer depends on it)."""

from __future__ import annotations

import pytest

from caffe_compat.errors import NetDefinitionError
from caffe_compat.io.upgrade import C3D_V1_TYPES, V1_TYPE_NAMES, v1_layer_to_v2, v2_layer_to_v1
from caffe_compat.proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter

# Caffe's UpgradeV1LayerType, spelled out for the types whose V2 name is not a plain re-casing.
IRREGULAR = {
    "ABSVAL": "AbsVal",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "RELU": "ReLU",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
}


BVLC_V1 = [v for v in V1.LayerType.DESCRIPTOR.values if v.name != "NONE" and v.number < 6600]


@pytest.mark.parametrize("enum", BVLC_V1)
def test_every_v1_type_has_caffes_v2_name(enum):
    expected = IRREGULAR.get(enum.name, enum.name.capitalize())
    assert V1_TYPE_NAMES[enum.number] == expected


def test_c3d_v1_types_are_read_not_written():
    """facebook/C3D v1.0's enum (6600 + its numbers): read as C3D v1.1's type strings."""
    c3d = [v for v in V1.LayerType.DESCRIPTOR.values if v.number >= 6600]
    assert {C3D_V1_TYPES[v.number] for v in c3d} >= {"Convolution3D", "Pooling3D", "VideoData"}
    assert not set(C3D_V1_TYPES) & set(V1_TYPE_NAMES)
    layer = v1_layer_to_v2(V1(name="c", type=V1.CONVOLUTION3D))
    assert layer.type == "Convolution3D"


def test_v1_layer_to_v2_and_back():
    old = caffe_pb2.V1LayerParameter(
        name="conv",
        type=V1.CONVOLUTION,
        bottom=["data"],
        top=["conv"],
        blobs_lr=[1, 2],
        weight_decay=[1, 0],
        param=["w", "b"],
        blob_share_mode=[V1.PERMISSIVE, V1.STRICT],
        loss_weight=[0.5],
    )
    old.include.add(phase=caffe_pb2.TRAIN, stage=["s"])
    old.convolution_param.num_output = 7
    old.convolution_param.weight_filler.type = "xavier"
    new = v1_layer_to_v2(old)
    assert (new.name, new.type, list(new.bottom), list(new.top)) == (
        "conv",
        "Convolution",
        ["data"],
        ["conv"],
    )
    assert [(p.name, p.share_mode, p.lr_mult, p.decay_mult) for p in new.param] == [
        ("w", caffe_pb2.ParamSpec.PERMISSIVE, 1, 1),
        ("b", caffe_pb2.ParamSpec.STRICT, 2, 0),
    ]
    assert new.include[0].phase == caffe_pb2.TRAIN and list(new.include[0].stage) == ["s"]
    assert list(new.loss_weight) == [0.5]
    assert new.convolution_param.weight_filler.type == "xavier"
    back = v2_layer_to_v1(new)
    back.ClearField("blob_share_mode")  # V2 -> V1 keeps names and multipliers only
    old.ClearField("blob_share_mode")
    assert back == old


def test_v1_blobs_come_along_as_in_caffe():
    old = caffe_pb2.V1LayerParameter(name="ip", type=V1.INNER_PRODUCT)
    old.blobs.add(data=[1.0, 2.0])
    assert list(v1_layer_to_v2(old).blobs[0].data) == [1.0, 2.0]


def test_v2_only_types_cannot_be_written_as_v1():
    with pytest.raises(NetDefinitionError, match=r'layer "bn".*no V1 enum value'):
        v2_layer_to_v1(caffe_pb2.LayerParameter(name="bn", type="BatchNorm"))
