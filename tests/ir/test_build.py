"""Graph building: phase rules, inputs from data layers, SSA names for in-place layers."""

from __future__ import annotations

import pytest

from caffe_compat.errors import NetDefinitionError
from caffe_compat.io.prototxt import parse_text
from caffe_compat.io.upgrade import upgrade_net
from caffe_compat.ir.build import build_graph
from caffe_compat.ir.phase import NetState
from caffe_compat.proto import caffe_pb2


def graph_of(text: str, **options):
    net = caffe_pb2.NetParameter()
    parse_text(text, net)
    upgrade_net(net)
    return build_graph(net, **options)


NET = """
name: "t"
input: "data" input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" include { phase: TRAIN } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" include { phase: TEST } }
"""


def test_in_place_chain_gets_distinct_values_and_final_name():
    graph = graph_of(NET)
    conv, relu, drop, fc, _ = graph.nodes
    assert conv.outputs == ["conv@conv"]
    assert relu.inputs == ["conv@conv"] and relu.outputs == ["conv@relu"]
    assert drop.outputs == ["conv"]  # Caffe's blob "conv" after the whole chain
    assert fc.inputs == ["conv"]
    assert graph.final["conv"] == "conv"
    assert graph.outputs == ["prob"]
    assert graph.inputs == {"data": (2, 3, 8, 8)}
    assert graph.resolve("conv") == "conv" and graph.resolve("conv@relu") == "conv@relu"


def test_train_phase_selects_train_layers_and_drops_the_loss():
    graph = graph_of(NET, state=NetState.make("TRAIN"))
    assert [n.name for n in graph.nodes] == ["conv", "relu", "drop", "fc"]
    assert graph.dropped == [("loss", "SoftmaxWithLoss")]
    assert graph.outputs == ["fc"]


def test_stage_level_rules():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "a" type: "ReLU" bottom: "x" top: "a" include { stage: "deploy" } }
    layer { name: "b" type: "ReLU" bottom: "x" top: "b" exclude { stage: "deploy" } }
    layer { name: "c" type: "ReLU" bottom: "x" top: "c" include { min_level: 2 } }
    layer { name: "d" type: "ReLU" bottom: "x" top: "d" include { max_level: 1 } }
    layer { name: "e" type: "ReLU" bottom: "x" top: "e" include { stage: "deploy" not_stage: "fast" } }
    """
    names = lambda g: [n.name for n in g.nodes]  # noqa: E731
    assert names(graph_of(text)) == ["b", "d"]
    assert names(graph_of(text, state=NetState.make(stages=["deploy"]))) == ["a", "d", "e"]
    assert names(graph_of(text, state=NetState.make(stages=["deploy", "fast"], level=3))) == [
        "a",
        "c",
    ]


def test_data_layer_becomes_input_and_training_layers_drop_out():
    text = """
    layer { name: "data" type: "Data" top: "data" top: "label"
            data_param { batch_size: 4 } transform_param { crop_size: 11 } }
    layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }
    layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" }
    """
    graph = graph_of(text)
    assert graph.inputs == {"data": (4, 3, 11, 11)}
    assert graph.outputs == ["fc"]
    assert ("acc", "Accuracy") in graph.dropped and ("data", "Data") in graph.dropped
    assert any("3 channels assumed" in note for note in graph.notes)


def test_input_override_and_unknown_input():
    graph = graph_of(NET, input_shapes={"data": (1, 3, 16, 16)})
    assert graph.inputs["data"] == (1, 3, 16, 16)
    with pytest.raises(NetDefinitionError, match="no input named nope"):
        graph_of(NET, input_shapes={"nope": (1,)})


def test_repeated_layer_names_are_kept_as_caffe_keeps_them():
    """HED repeats "crop", SSDLite "slice": Caffe's Net::Init accepts that. Later nodes get
    ``_1``, ``_2`` as in OpenCV (never a name the net already uses); param.name keeps Caffe's."""
    graph = graph_of(
        'input: "x" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1 '
        'layer { name: "b" type: "ReLU" bottom: "x" top: "y" } '
        'layer { name: "b" type: "ReLU" bottom: "y" top: "y" } '
        'layer { name: "b_1" type: "ReLU" bottom: "y" top: "z" } '
        'layer { name: "b" type: "ReLU" bottom: "z" top: "z" }'
    )
    assert [n.name for n in graph.nodes] == ["b", "b_2", "b_1", "b_3"]
    assert [n.param.name for n in graph.nodes] == ["b", "b", "b_1", "b"]
    assert graph.nodes[0].outputs == ["y@b"] and graph.nodes[1].outputs == ["y"]
    assert graph.nodes[2].outputs == ["z@b_1"] and graph.outputs == ["z"]


def test_wiring_errors_name_the_layer():
    with pytest.raises(NetDefinitionError, match=r'layer "r".*"ghost"'):
        graph_of('layer { name: "r" type: "ReLU" bottom: "ghost" top: "y" }')


def test_input_modified_in_place_keeps_its_name():
    graph = graph_of(
        'input: "x" input_dim: 1 input_dim: 2 input_dim: 1 input_dim: 1 '
        'layer { name: "s" type: "ReLU" bottom: "x" top: "x" } '
        'layer { name: "t" type: "ReLU" bottom: "x" top: "y" }'
    )
    assert list(graph.inputs) == ["x"]
    assert graph.nodes[0].outputs == ["x@s"]
    assert graph.final["x"] == "x@s" and graph.nodes[1].inputs == ["x@s"]


# --- nets built for training -----------------------------------------------------------------

TRAIN_VAL = """
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "x" batch_size: 8 } transform_param { crop_size: 5 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 4 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
layer { name: "silence" type: "Silence" bottom: "acc" }
"""


def test_training_build_keeps_losses_accuracy_silence_and_labels():
    from caffe_compat.ir.load import load_net_text

    graph = load_net_text(TRAIN_VAL, phase="TRAIN", training=True).graph
    assert graph.training
    assert graph.inputs == {"data": (8, 3, 5, 5), "label": (8,)}
    assert graph.sources == {"data": "data", "label": "data"}
    assert [n.type for n in graph.nodes] == [
        "InnerProduct",
        "SoftmaxWithLoss",
        "Accuracy",
        "Silence",
    ]
    loss = graph.node("loss")
    assert loss.outputs == ["(automatic)"] and graph.shapes["(automatic)"] == ()
    assert graph.outputs == []  # the automatic top is no output; acc is silenced
    inference = load_net_text(TRAIN_VAL, phase="TRAIN").graph
    assert [n.type for n in inference.nodes] == ["InnerProduct"]
    assert not inference.training and "label" not in inference.inputs


FCN_VAL = """
name: "fcn"
layer { name: "data" type: "Python" top: "data" top: "label"
        python_param { module: "no_such_voc_layers" layer: "VOCSegDataLayer" } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


def test_a_python_data_source_is_fed_when_its_tops_are_given_shapes():
    """FCN's val nets read data from a Python layer (voc_layers): given --input-shape for its
    tops, they are inputs and the user's class is not needed; a top not named is no input."""
    graph = graph_of(FCN_VAL, input_shapes={"data": (1, 3, 5, 5)})
    assert graph.inputs == {"data": (1, 3, 5, 5)}
    assert [n.name for n in graph.nodes] == ["score"]
    assert ("data", "Python") in graph.dropped
    assert any('"label" of "data" is not an input' in note for note in graph.notes)


def test_an_unfed_python_data_source_names_its_tops_in_one_line(tmp_path):
    from caffe_compat.errors import CaffeCompatError
    from caffe_compat.ir.load import load_net

    path = tmp_path / "val.prototxt"
    path.write_text(FCN_VAL)
    with pytest.raises(CaffeCompatError) as info:
        load_net(path)
    message = str(info.value)
    assert "no_such_voc_layers" in message and "\n" not in message
    assert "feed its tops (data, label) instead: --input-shape data=N,C,H,W" in message


def test_fcns_data_layers_are_fed_and_ask_for_a_shape(tmp_path):
    """fcn.berkeleyvision.org's dataset readers (voc_layers...) are never run by inference:
    their first top is an input whose shape --input-shape gives (a typical one suggested)."""
    from caffe_compat.errors import CaffeCompatError
    from caffe_compat.ir.load import load_net

    text = FCN_VAL.replace("no_such_voc_layers", "voc_layers")
    graph = graph_of(text)
    assert list(graph.inputs) == ["data"] and [n.name for n in graph.nodes] == ["score"]
    path = tmp_path / "fcn32s_val.prototxt"
    path.write_text(text)
    with pytest.raises(CaffeCompatError) as info:
        load_net(path)
    assert 'input "data" has no declared shape' in str(info.value)
    assert "1,3,500,500" in str(info.value)
    assert load_net(path, input_shapes={"data": (1, 3, 8, 8)}).graph.shapes["score"] == (1, 2, 8, 8)
