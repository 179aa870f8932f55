"""Stage rules as Caffe applies them. BVLC's examples/mnist/mnist_autoencoder.prototxt has one
data layer per phase/stage (all named alike) and two loss layers sharing one name with no rule at
all; Caffe's Net::Init checks no layer names, so the net loads under `--stage test-on-test`. The
net below has the same structure (written here, smaller)."""

from __future__ import annotations

import json

import pytest

from caffe_compat.cli.main import main
from caffe_compat.errors import NetDefinitionError
from caffe_compat.ir.load import load_net

AUTOENCODER = """name: "tiny_autoencoder"
layer { name: "pixels" type: "Data" top: "pixels" include { phase: TRAIN }
        data_param { source: "train_db" batch_size: 8 backend: LMDB } }
layer { name: "pixels" type: "Data" top: "pixels" include { phase: TEST stage: "eval-train" }
        data_param { source: "train_db" batch_size: 20 backend: LMDB } }
layer { name: "pixels" type: "Data" top: "pixels" include { phase: TEST stage: "eval-test" }
        data_param { source: "test_db" batch_size: 20 backend: LMDB } }
layer { name: "flat" type: "Flatten" bottom: "pixels" top: "flat" }
layer { name: "enc" type: "InnerProduct" bottom: "pixels" top: "enc" inner_product_param { num_output: 6 } }
layer { name: "enc_act" type: "Sigmoid" bottom: "enc" top: "enc_act" }
layer { name: "dec" type: "InnerProduct" bottom: "enc_act" top: "dec" inner_product_param { num_output: 16 } }
layer { name: "objective" type: "SigmoidCrossEntropyLoss" bottom: "dec" bottom: "flat" top: "xent" loss_weight: 1 }
layer { name: "dec_act" type: "Sigmoid" bottom: "dec" top: "dec_act" }
layer { name: "objective" type: "EuclideanLoss" bottom: "dec_act" bottom: "flat" top: "l2" loss_weight: 0 }
"""
SHAPE = {"pixels": (2, 1, 4, 4)}  # the database, not the net, says what a record holds


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "autoencoder.prototxt"
    path.write_text(AUTOENCODER)
    return path


@pytest.mark.parametrize(
    ("phase", "stages"), [("TEST", ["eval-test"]), ("TEST", ["eval-train"]), ("TRAIN", [])]
)
def test_loss_layers_sharing_a_name_are_accepted_as_caffe_does(net, phase, stages):
    loaded = load_net(net, phase=phase, stages=stages, input_shapes=SHAPE)
    graph = loaded.graph
    assert [n.name for n in graph.nodes] == ["flat", "enc", "enc_act", "dec", "dec_act"]
    assert graph.dropped.count(("objective", "SigmoidCrossEntropyLoss")) == 1
    assert ("objective", "EuclideanLoss") in graph.dropped
    assert loaded.inference.shapes["dec_act"] == (2, 16)


def test_computing_layers_sharing_a_name_need_no_weights(tmp_path):
    """Two kept Sigmoids named alike compute as in Caffe (nothing to attach); two kept
    InnerProducts named alike are refused: Caffe would give one of them the weights."""
    path = tmp_path / "twice.prototxt"
    path.write_text(AUTOENCODER.replace('name: "dec_act"', 'name: "enc_act"'))
    loaded = load_net(path, stages=["eval-test"], input_shapes=SHAPE)
    assert [n.name for n in loaded.graph.nodes][-1] == "enc_act_1"
    path.write_text(AUTOENCODER.replace('name: "dec"', 'name: "enc"'))
    with pytest.raises(NetDefinitionError, match=r'layer "enc".*2 layers are named "enc"'):
        load_net(path, stages=["eval-test"], input_shapes=SHAPE)


def test_without_a_stage_the_error_names_the_stages(net, capsys):
    with pytest.raises(NetDefinitionError) as info:
        load_net(net, input_shapes=SHAPE)
    message = str(info.value)
    assert '"pixels" is not produced' in message  # no TEST data layer without a stage
    assert "this net has stage rules: stages eval-train, eval-test" in message
    assert "stages selected: none" in message and "stages=[NAME]" in message
    assert main(["inspect", str(net)]) == 2
    err = capsys.readouterr().err
    assert "pass --stage NAME (and --phase TRAIN or TEST) to build the net of one stage" in err
    assert "stages=[" not in err


def test_nets_without_stage_rules_get_no_stage_hint(tmp_path):
    path = tmp_path / "plain.prototxt"
    path.write_text('layer { name: "r" type: "ReLU" bottom: "ghost" top: "y" }\n')
    with pytest.raises(NetDefinitionError) as info:
        load_net(path)
    assert "stage" not in info.value.reason and info.value.remedy is None


def test_the_cli_builds_the_chosen_stage(net, capsys):
    args = ["inspect", str(net), "--stage", "eval-test", "--input-shape", "pixels=2,1,4,4"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"] == {"flat": [2, 16], "dec_act": [2, 16]}  # the losses are gone
    assert {d["name"] for d in report["dropped"]} == {"pixels", "objective"}
