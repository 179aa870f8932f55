"""Caffe's backward decisions (ir/backward.py, after net.cpp's Net::Init) on small graphs."""

from __future__ import annotations

import pytest

from caffe_compat.ir.backward import loss_weights, param_owners, plan_backward
from caffe_compat.ir.load import load_net_text

HEAD = (
    'layer { name: "in" type: "Input" top: "data" top: "label" '
    "input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }\n"
)


def ip(name: str, bottom: str, top: str, extra: str = "") -> str:
    return (
        f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" {extra} '
        "inner_product_param { num_output: 3 } }\n"
    )


LOSS = 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "b" bottom: "label" }\n'


def plan(text: str, **options):
    graph = load_net_text(HEAD + text, phase="TRAIN", training=True).graph
    counts = [2 if n.type == "InnerProduct" else 0 for n in graph.nodes]
    return graph, plan_backward(graph, counts, **options)


def test_a_plain_chain_needs_backward_everywhere_but_the_labels():
    graph, p = plan(ip("a", "data", "a") + ip("b1", "a", "b") + LOSS)
    assert p.layer == [True, True, True]
    assert p.bottoms == [[False], [True], [True, False]]  # no input diff without force_backward
    assert p.params[0] == [True, True]
    assert p.loss_weights == {graph.nodes[2].outputs[0]: 1.0}


def test_lr_mult_zero_below_cuts_the_diffs_there():
    frozen = "param { lr_mult: 0 } param { lr_mult: 0 }"
    _, p = plan(ip("a", "data", "a", frozen) + ip("b1", "a", "b") + LOSS)
    assert p.layer == [False, True, True]
    assert p.bottoms[1] == [False]  # nothing below wants a diff
    assert p.params[0] == [False, False]


def test_a_layer_feeding_no_loss_computes_nothing():
    _, p = plan(ip("a", "data", "a") + ip("b1", "a", "b") + ip("side", "a", "s") + LOSS)
    assert p.layer == [True, True, False, True]
    assert p.params[2] == [False, False]


def test_propagate_down_false_on_every_consumer_stops_the_producer():
    text = ip("a", "data", "a") + ip("b1", "a", "b", "propagate_down: false") + LOSS
    _, p = plan(text)
    assert p.layer[0] is False and p.bottoms[1] == [False]
    # With a second consumer that does propagate, the Split keeps the producer in.
    text += ip("c", "a", "c") + ip("c2", "data", "c2")
    text += 'layer { name: "l2" type: "EuclideanLoss" bottom: "c" bottom: "c2" }\n'
    _, p = plan(text)
    assert p.layer[0] is True


def test_force_backward_turns_everything_on_but_what_layers_refuse():
    _, p = plan(
        ip("a", "data", "a", "param { lr_mult: 0 } param { lr_mult: 0 }")
        + ip("b1", "a", "b", "propagate_down: false")
        + LOSS,
        force_backward=True,
    )
    assert all(p.layer)
    assert p.bottoms == [[True], [True], [True, False]]  # the label: AllowForceBackward false
    assert p.params[0] == [True, True]  # even at lr_mult 0
    assert {"data", "a"} <= p.diffs and "label" not in p.diffs


def test_refusals_name_the_layer_and_caffes_reason():
    _, p = plan(
        ip("b1", "data", "b")
        + LOSS
        + 'layer { name: "acc" type: "Accuracy" bottom: "b" bottom: "label" top: "acc" }\n',
        force_backward=True,
    )
    node, bottom, reason = p.refusal()
    assert (node.name, bottom) == ("acc", 0) and "Not Implemented" in reason
    _, p = plan(ip("b1", "data", "b") + LOSS)
    assert p.refusal() is None  # Accuracy-free, no force_backward


def test_loss_weights_and_shared_owners():
    graph, _ = plan(
        ip("a", "data", "a", 'loss_weight: 0.5 param { name: "w" }')
        + ip("b1", "data", "b", 'param { name: "w" }')
        + LOSS
    )
    assert loss_weights(graph.node("a")) == [0.5]
    assert loss_weights(graph.node("loss")) == [1.0]
    owners = param_owners(graph, [2, 2, 0])
    assert owners[("b1", 0)] == ("a", 0) and owners[("b1", 1)] == ("b1", 1)


@pytest.mark.parametrize("count", [2, 3])
def test_loss_weight_counts_are_checked_when_building(count):
    from caffe_compat.errors import NetDefinitionError

    weights = " ".join(["loss_weight: 1"] * count)
    with pytest.raises(NetDefinitionError, match="loss_weight must be unspecified"):
        plan(ip("a", "data", "a", weights))
