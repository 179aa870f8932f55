"""What a drawing shows: draw_net.py's labels (written out by hand from its rules), one oval per
blob, an edge per bottom and top, in-place layers, phase filtering, V1 and V0 definitions
upgraded, recolouring by error ratio."""

from __future__ import annotations

import pytest
from _paths import ROOT

from caffe_compat.draw.model import (
    BLOB_FILL,
    FAMILY_FILLS,
    NEURON_FILL,
    net_drawing,
    ratio_colour,
    read_definition,
)
from caffe_compat.io.prototxt import parse_text
from caffe_compat.proto import caffe_pb2

TRAIN_VAL = """
name: "tv"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "x" batch_size: 32 } }
layer { name: "data" type: "Input" top: "data" top: "label" include { phase: TEST }
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
        exclude { phase: TEST } }
"""


def parsed(text: str) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    parse_text(text, net)
    return net


def test_labels_types_and_key_parameters_as_draw_net():
    drawing = net_drawing(parsed(TRAIN_VAL), phase="TRAIN", display_lrm=True)
    conv = drawing.shape("layer:conv")
    assert conv.lines == [
        "conv",
        "(Convolution)",
        "kernel size: 3",
        "stride: 2",
        "pad: 1",
        "group: 2",
        "lr mult: 1.0, 2.0",
    ]
    assert conv.fill == FAMILY_FILLS["conv"]
    pool = drawing.shape("layer:pool")
    assert pool.lines == ["pool", "(Pooling AVE)", "kernel size: 2", "stride: 2", "pad: 0"]
    relu = drawing.shape("layer:relu")
    assert relu.in_place and relu.fill == NEURON_FILL and relu.lines == ["relu", "(ReLU)"]
    assert drawing.shape("blob:conv").fill == BLOB_FILL
    tops = {(e.source, e.target): e.label for e in drawing.edges}
    assert tops[("layer:conv", "blob:conv")] == "4"
    assert tops[("layer:ip", "blob:ip")] == "5"
    assert tops[("layer:data", "blob:data")] == "Batch 32"
    assert tops[("blob:conv", "layer:relu")] == ""


def test_one_oval_per_blob_and_an_edge_per_bottom_and_top():
    net = parsed(TRAIN_VAL)
    drawing = net_drawing(net, phase="TRAIN")
    blobs = [s.name for s in drawing.shapes if s.kind == "blob"]
    assert sorted(blobs) == ["conv", "data", "ip", "label", "loss", "pool"]
    kept = [layer for layer in net.layer if layer.name not in ("acc",) and layer.type != "Input"]
    assert len(drawing.edges) == sum(len(x.bottom) + len(x.top) for x in kept)


@pytest.mark.parametrize(
    ("phase", "layers"),
    [
        ("TRAIN", ["data", "conv", "relu", "pool", "ip", "loss"]),
        ("TEST", ["data", "conv", "relu", "pool", "ip", "acc"]),
        (None, ["data", "data", "conv", "relu", "pool", "ip", "acc", "loss"]),
    ],
)
def test_phase_filter_and_all(phase, layers):
    drawing = net_drawing(parsed(TRAIN_VAL), phase=phase)
    assert [s.name for s in drawing.layers()] == layers
    assert len({s.id for s in drawing.shapes}) == len(drawing.shapes)  # two "data" layers: two ids
    if phase == "TEST":
        assert drawing.shape("layer:data").type == "Input"
        assert drawing.shape("layer:data").lines[2:] == ["2x3x8x8", "2"]


def test_v1_definition_drawn_after_upgrade():
    net = read_definition(ROOT / "tests/fuzz/seeds/small_train_v1.prototxt")
    drawing = net_drawing(net, phase="TRAIN")
    types = {s.name: s.type for s in drawing.layers()}
    assert types == {
        "data": "Data",
        "conv": "Convolution",
        "relu": "ReLU",
        "pool": "Pooling",
        "ip": "InnerProduct",
        "loss": "SoftmaxWithLoss",
    }


V0_NET = """
name: "v0"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 } bottom: "data" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
layers { layer { name: "conv2" type: "conv" num_output: 2 kernelsize: 3 } bottom: "pad2" top: "conv2" }
layers { layer { name: "prob" type: "softmax" } bottom: "conv2" top: "prob" }
"""


def test_v0_definition_drawn_after_upgrade(tmp_path):
    path = tmp_path / "v0.prototxt"
    path.write_text(V0_NET)
    drawing = net_drawing(read_definition(path))
    names = [s.name for s in drawing.layers()]
    assert "pad2" not in names and "pad3" not in names  # padding folded into conv2 / pool2
    assert drawing.shape("layer:conv2").lines[2:5] == ["kernel size: 3", "stride: 1", "pad: 1"]
    assert drawing.shape("layer:input").lines == ["input", "(Input)", "1x3x9x9"]  # input_dim


def test_bad_rankdir_and_both_rules_are_refused():
    with pytest.raises(ValueError, match="rankdir"):
        net_drawing(parsed(TRAIN_VAL), rankdir="XY")
    both = 'layer { name: "a" type: "ReLU" bottom: "x" top: "x" include { phase: TEST } exclude { phase: TRAIN } }'
    with pytest.raises(Exception, match="include rules or exclude rules"):
        net_drawing(parsed(both), phase="TEST")


def test_ratio_colours_green_to_red_and_recolouring():
    assert ratio_colour(0.0) == "#5CB85C"
    assert ratio_colour(1e-6) == "#5CB85C"  # below 1e-4: the full green
    assert ratio_colour(1.0) == "#F59632"  # orange at the line
    assert (
        ratio_colour(1.01) == ratio_colour(float("inf")) == ratio_colour(float("nan")) == "#E8443A"
    )
    reds = [int(ratio_colour(r)[1:3], 16) for r in (1e-4, 1e-3, 1e-2, 0.1, 1.0)]
    assert reds == sorted(reds) and reds[0] < reds[-1]
    drawing = net_drawing(parsed(TRAIN_VAL), phase="TEST")
    coloured = drawing.recoloured(
        lambda s: ("#123456", "note") if s.name == "conv" else None, marked=["pool"]
    )
    assert coloured.shape("layer:conv").fill == "#123456"
    assert coloured.shape("layer:conv").note == "note"
    assert coloured.shape("layer:pool").marked and not coloured.shape("layer:conv").marked
    assert coloured.shape("blob:conv").fill == BLOB_FILL  # blobs keep their colour
    assert drawing.shape("layer:conv").fill == FAMILY_FILLS["conv"]  # a copy
