"""TrainNet: Caffe's net semantics for training (net.cpp, layer.hpp, pycaffe's backward), on
tiny nets: learnable params and sharing, diffs that accumulate or are overwritten, which diffs
exist, refusals, DummyData, BatchNorm's running sums, weights in and out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _training import inputs_layer, judge, make_net

from caffe_compat.errors import CaffeCompatError, NetDefinitionError, WeightsMismatchError
from caffe_compat.ir.load import load_net
from caffe_compat.train import TrainNet

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 3, 6, 6)).astype(np.float32)
Y = np.array([0, 1, 2, 1], np.float32)

CONV = (
    'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" {extra} '
    'convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "gaussian" '
    'std: 0.3 }} bias_filler {{ type: "uniform" min: -0.1 max: 0.1 }} }} }}\n'
)
IP = (
    'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" {extra} '
    'inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}\n'
)
LOSS = 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n'


def conv(name="conv", bottom="data", top="conv", extra=""):
    return CONV.format(name=name, bottom=bottom, top=top, extra=extra)


def ip(name="ip", bottom="conv", top="ip", extra=""):
    return IP.format(name=name, bottom=bottom, top=top, extra=extra)


def simple(tmp_path, middle="", head="", **options) -> TrainNet:
    text = head + inputs_layer(data=X, label=Y) + conv() + middle + ip() + LOSS
    return make_net(tmp_path, text, **options)


FEEDS = {"data": X, "label": Y}


def test_learnable_params_in_caffe_order_with_their_multipliers(tmp_path):
    extra = "param { lr_mult: 2 decay_mult: 0 } param { lr_mult: 0 }"
    net = simple(tmp_path, head="", middle="")
    assert [p.owner for p in net.learnable_params] == [
        ("conv", 0),
        ("conv", 1),
        ("ip", 0),
        ("ip", 1),
    ]
    text = inputs_layer(data=X, label=Y) + conv(extra=extra) + ip() + LOSS
    net = make_net(tmp_path, text)
    weight, bias = net.params["conv"]
    assert (weight.lr_mult, weight.decay_mult, bias.lr_mult, bias.decay_mult) == (2, 0, 0, 1)
    net.forward_backward(FEEDS)
    assert weight.diff.abs().sum() > 0
    assert torch.equal(bias.diff, torch.zeros(4))  # lr_mult 0: no diff at all
    assert not bias.tensor.requires_grad


def test_param_diffs_accumulate_and_bottom_diffs_are_overwritten(tmp_path):
    net = simple(tmp_path, head="force_backward: true\n")
    net.forward(FEEDS)
    net.backward()
    once = [p.diff.clone() for p in net.learnable_params]
    data_diff = net.blobs["data"].diff.clone()
    net.backward()
    for first, param in zip(once, net.learnable_params):
        torch.testing.assert_close(param.diff, 2 * first)
    torch.testing.assert_close(net.blobs["data"].diff, data_diff)
    net.clear_param_diffs()
    assert all(float(p.diff.abs().sum()) == 0 for p in net.learnable_params)


def test_input_diffs_only_with_force_backward(tmp_path):
    net = simple(tmp_path)
    net.forward_backward(FEEDS)
    assert float(net.blobs["data"].diff.abs().sum()) == 0
    assert float(net.blobs["conv"].diff.abs().sum()) > 0
    net = simple(tmp_path, head="force_backward: true\n")
    judge(net, FEEDS)
    assert float(net.blobs["data"].diff.abs().sum()) > 0
    assert float(net.blobs["label"].diff.abs().sum()) == 0  # AllowForceBackward: not labels


def test_in_place_blob_diff_is_the_first_versions(tmp_path):
    relu = 'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }\n'
    net = simple(tmp_path, middle=relu)
    judge(net, FEEDS)
    pre = net._env["conv@conv"]
    assert torch.equal(net.blobs["conv"].diff, pre.grad)  # Caffe's conv blob diff: before ReLU
    assert torch.equal(net.blobs["conv"].data, torch.relu(pre.detach()))


def test_propagate_down_false_cuts_one_consumer_only(tmp_path):
    text = (
        inputs_layer(data=X, label=Y)
        + conv()
        + ip()
        + ip(name="ip2", top="ip2", extra="propagate_down: false")
        + LOSS
        + 'layer { name: "loss2" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" }\n'
    )
    net = make_net(tmp_path, text)
    judge(net, FEEDS)
    assert float(net.params["conv"][0].diff.abs().sum()) > 0  # ip still reaches conv
    text = text.replace('bottom: "conv" top: "ip" ', 'bottom: "conv" top: "ip" propagate_down: 0 ')
    net = make_net(tmp_path, text)
    judge(net, FEEDS)
    assert float(net.params["conv"][0].diff.abs().sum()) == 0  # both consumers cut it
    assert not net.plan.layer[0]


def test_force_backward_overrides_propagate_down(tmp_path):
    text = (
        "force_backward: true\n"
        + inputs_layer(data=X, label=Y)
        + conv()
        + ip(extra="propagate_down: false")
        + LOSS
    )
    net = make_net(tmp_path, text)
    judge(net, FEEDS)
    assert float(net.params["conv"][0].diff.abs().sum()) > 0


def test_layers_that_feed_no_loss_get_no_diffs(tmp_path):
    text = inputs_layer(data=X, label=Y) + conv() + ip() + ip(name="side", top="side") + LOSS
    net = make_net(tmp_path, text)
    judge(net, FEEDS)
    assert all(float(p.diff.abs().sum()) == 0 for p in net.params["side"])
    assert "side" in net.forward(FEEDS)


def test_loss_weight_on_any_top(tmp_path):
    text = inputs_layer(data=X, label=Y) + conv() + ip(extra="loss_weight: 0.5")
    net = make_net(tmp_path, text)
    out = net.forward(FEEDS)
    assert net.loss == pytest.approx(0.5 * float(out["ip"].sum()), rel=1e-5)
    judge(net, FEEDS)
    assert torch.allclose(net.blobs["ip"].diff, torch.full((4, 3), 0.5))


def test_shared_params_are_one_blob_with_summed_diffs(tmp_path):
    shared = 'param { name: "w" } param { name: "b" }'
    text = (
        inputs_layer(data=X, other=X[::-1].copy(), label=Y)
        + conv(extra=shared)
        + conv(name="conv_b", bottom="other", top="conv_b", extra=shared)
        + 'layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "conv_b" top: "s" }\n'
        + ip(bottom="s")
        + LOSS
    )
    net = make_net(tmp_path, text)
    assert net.params["conv"][0] is net.params["conv_b"][0]
    assert [p.owner for p in net.learnable_params][:2] == [("conv", 0), ("conv", 1)]
    assert len(net.learnable_params) == 4
    judge(net, {"data": X, "other": X[::-1].copy(), "label": Y})


@pytest.mark.parametrize(
    "second, message",
    [
        ("convolution_param { num_output: 5 kernel_size: 3 }", "shape mismatch"),
        (
            'param { name: "w" lr_mult: 3 } convolution_param { num_output: 4 kernel_size: 3 }',
            "mismatched lr_mult",
        ),
    ],
)
def test_sharing_checks(tmp_path, second, message):
    text = (
        inputs_layer(data=X, label=Y)
        + 'layer { name: "a" type: "Convolution" bottom: "data" top: "a" param { name: "w" '
        "lr_mult: 2 } convolution_param { num_output: 4 kernel_size: 3 } }\n"
        + 'layer { name: "b" type: "Convolution" bottom: "data" top: "b" '
        + ('param { name: "w" } ' if not second.startswith("param") else "")
        + second
        + " }\n"
    )
    with pytest.raises(NetDefinitionError, match=message):
        make_net(tmp_path, text)


@pytest.mark.parametrize(
    "layers, feeds, message",
    [
        (
            conv()
            + ip()
            + LOSS
            + 'layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }\n',
            True,
            "Not Implemented Yet",
        ),
        (
            conv()
            + 'layer { name: "t" type: "Threshold" bottom: "conv" top: "t" }\n'
            + ip(bottom="t")
            + LOSS,
            False,
            "Threshold has no backward",
        ),
        (
            conv()
            + ip()
            + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" '
            "propagate_down: 1 propagate_down: 1 }\n",
            False,
            "cannot backpropagate to label inputs",
        ),
    ],
)
def test_backward_refused_where_caffe_aborts(tmp_path, layers, feeds, message):
    head = "force_backward: true\n" if feeds else ""
    net = make_net(tmp_path, head + inputs_layer(data=X, label=Y) + layers)
    net.forward(FEEDS)  # forward runs as in Caffe; backward aborts there
    with pytest.raises(CaffeCompatError, match=message):
        net.backward()


def test_outputs_the_automatic_loss_top_and_the_loss(tmp_path):
    text = (
        inputs_layer(data=X, label=Y)
        + conv()
        + ip()
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" }\n'
        + 'layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }\n'
        + 'layer { name: "silence" type: "Silence" bottom: "conv" }\n'
    )
    net = make_net(tmp_path, text)
    out = net.forward(FEEDS)
    assert list(out) == ["acc"]  # the anonymous loss top is no output; conv is silenced
    assert net.loss > 0 and "(automatic)" in net.blobs
    assert float(net.blobs["(automatic)"].data) == pytest.approx(net.loss)
    judge(net, FEEDS)


def test_outputs_are_sorted_by_name_as_caffe_lists_them(tmp_path):
    text = (
        inputs_layer(data=X, label=Y) + conv() + ip(name="zz", top="zz") + ip(name="aa", top="aa")
    )
    net = make_net(tmp_path, text)
    assert net.output_names == ["aa", "zz"]
    assert net.input_names == ["data", "label"]


def test_dummy_data_refills_random_tops_and_keeps_constant_ones(tmp_path):
    text = (
        'layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param { '
        "shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } "
        'data_filler { type: "gaussian" std: 2 } data_filler { type: "constant" value: 1 } } }\n'
        + conv()
        + ip()
        + LOSS
    )
    net = make_net(tmp_path, text)
    assert net.input_names == []
    net.forward()
    first = net.blobs["data"].data.clone()
    net.forward()
    assert not torch.equal(first, net.blobs["data"].data)
    assert 1.5 < float(net.blobs["data"].data.std()) < 2.5
    assert torch.equal(net.blobs["label"].data, torch.ones(4))
    net.blobs["label"].data.fill_(2)  # a constant top keeps what is written to it
    net.forward()
    assert torch.equal(net.blobs["label"].data, torch.full((4,), 2.0))
    judge(net)


def test_dropout_scales_kept_values_at_training_time(tmp_path):
    drop = 'layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" dropout_param { dropout_ratio: 0.25 } }\n'
    net = simple(tmp_path, middle=drop)
    net.forward(FEEDS)
    mask = net.dropout_masks["drop"]
    pre = net._env["conv@conv"].detach()
    torch.testing.assert_close(net.blobs["conv"].data, pre * mask / 0.75)
    assert 0.5 < float(mask.mean()) < 0.95
    judge(net, FEEDS)
    test_net = simple(tmp_path, middle=drop, phase="TEST")
    test_net.forward(FEEDS)
    assert test_net.dropout_masks == {}


def test_fast_rcnn_dropout_drops_unscaled_and_scales_at_test(tmp_path):
    """caffe-fast-rcnn's ``scale_train: false``: kept values pass unscaled while training (the
    float64 judge agrees, backward included), and the TEST net multiplies by 1 - ratio."""
    drop = (
        'layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" '
        "dropout_param { dropout_ratio: 0.25 scale_train: false } }\n"
    )
    net = simple(tmp_path, middle=drop)
    net.forward(FEEDS)
    mask = net.dropout_masks["drop"]
    pre = net._env["conv@conv"].detach()
    torch.testing.assert_close(net.blobs["conv"].data, pre * mask)
    judge(net, FEEDS)
    test_net = simple(tmp_path, middle=drop, phase="TEST")
    test_net.forward(FEEDS)
    pre = test_net._env["conv@conv"].detach()
    torch.testing.assert_close(test_net.blobs["conv"].data, pre * 0.75)


def test_batch_norm_running_sums_and_the_test_net_sharing_them(tmp_path):
    bn = 'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { moving_average_fraction: 0.8 } }\n'
    net = simple(tmp_path, middle=bn)
    stats = net.params["bn"]
    assert [p.lr_mult for p in stats] == [0, 0, 0]  # Caffe forces lr_mult 0 on them
    pre = []
    for _ in range(3):
        pre.append(judge(net, FEEDS))  # each pass: Caffe's update of the sums, checked
    factor = 1 + 0.8 * (1 + 0.8)
    assert float(stats[2].data) == pytest.approx(factor)
    test_net = simple(tmp_path, middle=bn, phase="TEST")
    test_net.share_trained_layers_with(net)
    out_mean = net.params["bn"][0].data / factor
    test_net.forward(FEEDS)
    batch = test_net._env["conv@conv"].detach()
    expected = (batch - out_mean.reshape(1, -1, 1, 1)) / torch.sqrt(
        net.params["bn"][1].data.reshape(1, -1, 1, 1) / factor + 1e-5
    )
    torch.testing.assert_close(test_net.blobs["conv"].data, expected, rtol=1e-5, atol=1e-5)
    assert all(float(p.diff.abs().sum()) == 0 for p in stats)


def test_batch_norm_statistics_cannot_be_learned(tmp_path):
    bn = 'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" param { lr_mult: 1 } }\n'
    with pytest.raises(NetDefinitionError, match="Cannot configure batch normalization"):
        simple(tmp_path, middle=bn)


def test_weights_round_trip_and_copy_trained_from(tmp_path):
    net = simple(tmp_path)
    path = tmp_path / "snap.caffemodel"
    net.to_caffemodel(path)
    again = simple(tmp_path, weights=path, seed=99)
    for a, b in zip(net.learnable_params, again.learnable_params):
        assert torch.equal(a.data, b.data)
    h5 = tmp_path / "snap.caffemodel.h5"
    net.to_hdf5(h5)
    third = simple(tmp_path, weights=h5, seed=7)
    assert torch.equal(third.params["ip"][0].data, net.params["ip"][0].data)
    # A deploy conversion of the snapshot computes what the training engine computes.
    deploy = load_net(tmp_path / "net.prototxt", path, phase="TEST")
    from caffe_compat.converters.torch.model import to_torch

    model = to_torch(deploy.graph)
    net.forward(FEEDS)
    found = model(torch.from_numpy(X), torch.from_numpy(Y), outputs=["ip"])["ip"]
    torch.testing.assert_close(found, net.blobs["ip"].data, rtol=1e-5, atol=1e-5)


def test_copy_trained_from_refuses_other_shapes_with_caffes_words(tmp_path):
    net = simple(tmp_path)
    path = tmp_path / "snap.caffemodel"
    net.to_caffemodel(path)
    text = (
        inputs_layer(data=X, label=Y)
        + conv()
        + IP.format(name="ip", bottom="conv", top="ip", extra="").replace(
            "num_output: 3", "num_output: 5"
        )
        + LOSS
    )
    (tmp_path / "other.prototxt").write_text(text)
    with pytest.raises(WeightsMismatchError, match="Cannot copy param 0 weights from layer 'ip'"):
        TrainNet(tmp_path / "other.prototxt", weights=path)


def test_inputs_errors_and_a_new_batch_size(tmp_path):
    net = simple(tmp_path)
    with pytest.raises(CaffeCompatError, match="never given"):
        net.forward({"data": X})
    with pytest.raises(CaffeCompatError, match="no input named nope"):
        net.forward({"nope": X})
    with pytest.raises(CaffeCompatError, match="forward first"):
        simple(tmp_path).backward()
    net.forward(FEEDS)
    small = {"data": X[:2], "label": Y[:2]}
    judge(net, small)
    assert net.blobs["data"].data.shape[0] == 2


def test_max_pooling_ties_send_the_diff_to_the_first_maximum(tmp_path):
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, :2, :2] = 5.0  # four equal maxima in the first window
    text = (
        "force_backward: true\n"
        + inputs_layer(data=x)
        + 'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 } loss_weight: 1 }\n"
    )
    net = make_net(tmp_path, text)
    judge(net, {"data": x})
    diff = net.blobs["data"].diff[0, 0]
    assert float(diff[0, 0]) == 1 and float(diff[:2, :2].sum()) == 1


def test_eltwise_max_ties_go_where_caffe_sends_them(tmp_path):
    a = np.ones((1, 4), np.float32)
    text = (
        "force_backward: true\n"
        + inputs_layer(a=a, b=a.copy(), c=a.copy())
        + 'layer { name: "m" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "m" '
        "eltwise_param { operation: MAX } loss_weight: 1 }\n"
    )
    net = make_net(tmp_path, text)
    judge(net, {"a": a, "b": a, "c": a})
    blobs = net.blobs  # bottom 1 beats bottom 0 on a tie; a later bottom must be greater
    assert [float(blobs[n].diff.sum()) for n in "abc"] == [0.0, 4.0, 0.0]


def test_onnx_export_of_a_training_graph_is_refused_in_one_line(tmp_path):
    from caffe_compat.converters.onnx.export import to_onnx

    net = simple(tmp_path)
    with pytest.raises(CaffeCompatError, match="not needed: ONNX export is for inference"):
        to_onnx(net.graph)


def test_a_seed_makes_fillers_dummy_data_and_dropout_reproducible(tmp_path):
    text = (
        'layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param { '
        "shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } "
        'data_filler { type: "gaussian" } data_filler { type: "constant" value: 2 } } }\n'
        + conv()
        + 'layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" }\n'
        + ip()
        + LOSS
    )
    losses = [make_net(tmp_path, text, seed=seed).forward_backward() for seed in (4, 4, 5)]
    assert losses[0] == losses[1] != losses[2]
