"""The loss layers' PyTorch modules, through the training engine: against the float64 reference
(forward and backward), and facts ported from BVLC Caffe's src/caffe/test/test_*_loss_layer.cpp,
each computed here by an independent loop as Caffe's tests do."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _training import inputs_layer, judge, make_net

from caffe_compat.errors import CaffeCompatError, NetDefinitionError
from caffe_compat.proto import caffe_pb2

RNG = np.random.default_rng(3)
SCORES = RNG.normal(size=(10, 5, 2, 3)).astype(np.float32)  # Caffe's tests: 10 x 5 x 2 x 3
LABELS = RNG.integers(0, 5, size=(10, 1, 2, 3)).astype(np.float32)
FLAT = RNG.normal(size=(10, 5)).astype(np.float32)
FLAT_LABELS = RNG.integers(0, 5, size=(10,)).astype(np.float32)


def loss_net(tmp_path, layer: str, **arrays):
    net = make_net(tmp_path, "force_backward: true\n" + inputs_layer(**arrays) + layer)
    return net, arrays


def layer(kind: str, bottoms=("data", "label"), body: str = "", top: str = "loss") -> str:
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = f'top: "{top}"' if top else ""
    return f'layer {{ name: "loss" type: "{kind}" {b} {t} {body} }}\n'


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- engine against the reference ------------------------------------------------------------

CASES = {
    "softmax": (layer("SoftmaxWithLoss"), {"data": SCORES, "label": LABELS}),
    "softmax_ignore_full": (
        layer("SoftmaxWithLoss", body="loss_param { ignore_label: 2 normalization: FULL }"),
        {"data": SCORES, "label": LABELS},
    ),
    "softmax_batch_size": (
        layer("SoftmaxWithLoss", body="loss_param { normalization: BATCH_SIZE }"),
        {"data": SCORES, "label": LABELS},
    ),
    "softmax_none_weighted": (
        layer("SoftmaxWithLoss", body="loss_weight: 2.5 loss_param { normalization: NONE }"),
        {"data": SCORES, "label": LABELS},
    ),
    "softmax_legacy_normalize_false": (
        layer("SoftmaxWithLoss", body="loss_param { normalize: false ignore_label: 1 }"),
        {"data": SCORES, "label": LABELS},
    ),
    "softmax_axis_2": (
        layer("SoftmaxWithLoss", body="softmax_param { axis: 2 }"),
        {
            "data": FLAT[:2].reshape(2, 5, 1) * np.arange(1, 4, dtype=np.float32),
            "label": RNG.integers(0, 3, size=(2, 5)).astype(np.float32),
        },
    ),
    "euclidean": (
        layer("EuclideanLoss", ("data", "target"), "loss_weight: 3.7"),
        {"data": FLAT, "target": RNG.normal(size=(10, 5, 1)).astype(np.float32)},
    ),
    "sigmoid_cross_entropy": (
        layer("SigmoidCrossEntropyLoss", ("data", "target")),
        {"data": FLAT, "target": RNG.uniform(size=(10, 5)).astype(np.float32)},
    ),
    "sigmoid_cross_entropy_ignore_valid": (
        layer(
            "SigmoidCrossEntropyLoss",
            ("data", "target"),
            "loss_param { ignore_label: -1 normalization: VALID }",
        ),
        {"data": FLAT, "target": RNG.integers(-1, 2, size=(10, 5)).astype(np.float32)},
    ),
    "hinge_l1": (layer("HingeLoss"), {"data": FLAT, "label": FLAT_LABELS}),
    "hinge_l2": (
        layer("HingeLoss", body="hinge_loss_param { norm: L2 }"),
        {"data": FLAT, "label": FLAT_LABELS},
    ),
    "contrastive": (
        layer("ContrastiveLoss", ("a", "b", "similar"), "contrastive_loss_param { margin: 2 }"),
        {
            "a": RNG.normal(size=(8, 4, 1, 1)).astype(np.float32),
            "b": RNG.normal(size=(8, 4, 1, 1)).astype(np.float32),
            "similar": RNG.integers(0, 2, size=(8, 1, 1, 1)).astype(np.float32),
        },
    ),
    "contrastive_legacy": (
        layer(
            "ContrastiveLoss",
            ("a", "b", "similar"),
            "contrastive_loss_param { margin: 2 legacy_version: true }",
        ),
        {
            "a": RNG.normal(size=(8, 4)).astype(np.float32),
            "b": RNG.normal(size=(8, 4)).astype(np.float32),
            "similar": RNG.integers(0, 2, size=(8,)).astype(np.float32),
        },
    ),
    "multinomial_logistic": (
        layer("MultinomialLogisticLoss"),
        {"data": RNG.uniform(0.05, 1, size=(10, 5)).astype(np.float32), "label": FLAT_LABELS},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_losses_match_the_reference(tmp_path, case):
    text, arrays = CASES[case]
    net, arrays = loss_net(tmp_path, text, **arrays)
    judge(net, arrays)


def test_infogain_with_h_from_a_file_and_as_a_bottom(tmp_path):
    h = RNG.uniform(size=(5, 5)).astype(np.float32)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([1, 1, 5, 5])
    blob.data.extend(h.reshape(-1).tolist())
    source = tmp_path / "H.binaryproto"
    source.write_bytes(blob.SerializeToString())
    body = f'infogain_loss_param {{ source: "{source}" }} loss_param {{ ignore_label: 3 }}'
    net, arrays = loss_net(tmp_path, layer("InfogainLoss", body=body), data=FLAT, label=FLAT_LABELS)
    judge(net, arrays)
    from_file = net.loss
    # The same H as a third bottom gives the same loss (no force_backward: H gets no diff).
    text = inputs_layer(data=FLAT, label=FLAT_LABELS, H=h) + layer(
        "InfogainLoss", ("data", "label", "H"), "loss_param { ignore_label: 3 }"
    )
    net = make_net(tmp_path, text)
    judge(net, {"data": FLAT, "label": FLAT_LABELS, "H": h})
    assert net.loss == pytest.approx(from_file, rel=1e-6)


def test_infogain_refusals(tmp_path):
    with pytest.raises(NetDefinitionError, match="normalize is deprecated"):
        loss_net(
            tmp_path,
            layer("InfogainLoss", body="loss_param { normalize: true }"),
            data=FLAT,
            label=FLAT_LABELS,
        )
    with pytest.raises(NetDefinitionError, match="needs its matrix H"):
        loss_net(tmp_path, layer("InfogainLoss"), data=FLAT, label=FLAT_LABELS)
    # force_backward reaches a third bottom H, and Caffe's backward aborts there.
    h = np.eye(5, dtype=np.float32)
    net, arrays = loss_net(
        tmp_path, layer("InfogainLoss", ("data", "label", "H")), data=FLAT, label=FLAT_LABELS, H=h
    )
    with pytest.raises(CaffeCompatError, match="cannot backpropagate to infogain inputs"):
        net.forward_backward(arrays)


# --- facts from Caffe's tests, by independent loops -------------------------------------------


def test_softmax_loss_ignoring_each_label_in_turn_sums_to_four_times_the_full_loss(tmp_path):
    """TestForwardIgnoreLabel (normalize: false)."""

    def loss(extra: str) -> float:
        body = f"loss_param {{ normalize: false {extra} }}"
        net, arrays = loss_net(
            tmp_path, layer("SoftmaxWithLoss", body=body), data=SCORES, label=LABELS
        )
        net.forward(arrays)
        return net.loss

    full = loss("")
    total = sum(loss(f"ignore_label: {label}") for label in range(5))
    assert total == pytest.approx(4 * full, abs=1e-4)


def test_softmax_loss_value_and_normalisation_modes(tmp_path):
    prob = softmax(SCORES.astype(np.float64))
    lab = LABELS.reshape(10, 2, 3).astype(int)
    total, valid = 0.0, 0
    for n in range(10):
        for h in range(2):
            for w in range(3):
                if lab[n, h, w] != 4:  # ignore_label 4
                    total -= math.log(max(prob[n, lab[n, h, w], h, w], np.finfo(np.float32).tiny))
                    valid += 1
    expected = {"VALID": total / valid, "FULL": total / 60, "BATCH_SIZE": total / 10, "NONE": total}
    for mode, value in expected.items():
        body = f"loss_param {{ ignore_label: 4 normalization: {mode} }}"
        net, arrays = loss_net(
            tmp_path, layer("SoftmaxWithLoss", body=body), data=SCORES, label=LABELS
        )
        net.forward(arrays)
        assert net.loss == pytest.approx(value, rel=1e-5), mode


def test_loss_weight_scales_the_loss_and_the_diffs(tmp_path):
    """TestForward of test_euclidean_loss_layer.cpp: weight 3.7 gives 3.7 x the loss."""
    target = RNG.normal(size=FLAT.shape).astype(np.float32)
    results = []
    for weight in ("", "loss_weight: 3.7"):
        net, arrays = loss_net(
            tmp_path, layer("EuclideanLoss", ("data", "target"), weight), data=FLAT, target=target
        )
        loss = net.forward_backward(arrays)
        results.append((loss, net.blobs["data"].diff.clone()))
    (one, d1), (scaled, d2) = results
    assert scaled == pytest.approx(3.7 * one, rel=1e-5)
    assert one == pytest.approx(((FLAT - target) ** 2).sum() / 10 / 2, rel=1e-5)
    np.testing.assert_allclose(d2.numpy(), 3.7 * d1.numpy(), rtol=1e-5)


def test_sigmoid_cross_entropy_divides_by_the_batch_by_default(tmp_path):
    """Its default is BATCH_SIZE, not the proto's VALID (sigmoid_cross_entropy_loss_layer)."""
    x, t = FLAT.astype(np.float64), RNG.uniform(size=(10, 5))
    expected = 0.0
    for v, target in zip(x.reshape(-1), t.reshape(-1)):
        p = 1 / (1 + math.exp(-v))
        expected -= target * math.log(p) + (1 - target) * math.log(1 - p)
    net, arrays = loss_net(
        tmp_path,
        layer("SigmoidCrossEntropyLoss", ("data", "target")),
        data=FLAT,
        target=t.astype(np.float32),
    )
    net.forward(arrays)
    assert net.loss == pytest.approx(expected / 10, rel=1e-5)


def test_hinge_loss_l1_and_l2(tmp_path):
    for norm in ("L1", "L2"):
        expected = 0.0
        for n in range(10):
            for c in range(5):
                sign = -1.0 if c == int(FLAT_LABELS[n]) else 1.0
                margin = max(0.0, 1 + sign * float(FLAT[n, c]))
                expected += margin if norm == "L1" else margin * margin
        body = f"hinge_loss_param {{ norm: {norm} }}"
        net, arrays = loss_net(
            tmp_path, layer("HingeLoss", body=body), data=FLAT, label=FLAT_LABELS
        )
        net.forward(arrays)
        assert net.loss == pytest.approx(expected / 10, rel=1e-5), norm


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss_value(tmp_path, legacy):
    """TestForward / TestForwardLegacy of test_contrastive_loss_layer.cpp."""
    a, b, sim = (CASES["contrastive"][1][k] for k in ("a", "b", "similar"))
    margin, expected = 2.0, 0.0
    for i in range(8):
        dist_sq = float(((a[i] - b[i]) ** 2).sum())
        if sim[i].item():
            expected += dist_sq
        elif legacy:
            expected += max(margin - dist_sq, 0.0)
        else:
            expected += max(margin - math.sqrt(dist_sq), 0.0) ** 2
    body = f"contrastive_loss_param {{ margin: 2 legacy_version: {str(legacy).lower()} }}"
    net, arrays = loss_net(
        tmp_path, layer("ContrastiveLoss", ("a", "b", "similar"), body), a=a, b=b, similar=sim
    )
    net.forward(arrays)
    assert net.loss == pytest.approx(expected / 8 / 2, rel=1e-5)


def test_multinomial_logistic_floors_the_probability(tmp_path):
    probs = np.full((2, 3), 0.5, np.float32)
    probs[0, 1] = 0.0  # log(0) would be inf: Caffe floors p at 1e-20
    net, arrays = loss_net(
        tmp_path, layer("MultinomialLogisticLoss"), data=probs, label=np.array([1, 2], np.float32)
    )
    net.forward_backward(arrays)
    assert net.loss == pytest.approx((-math.log(1e-20) - math.log(0.5)) / 2, rel=1e-6)
    assert float(net.blobs["data"].diff[0, 1]) == pytest.approx(-0.5 / 1e-20, rel=1e-5)


def test_labels_outside_the_classes_are_refused_by_layer(tmp_path):
    net, arrays = loss_net(
        tmp_path, layer("SoftmaxWithLoss"), data=FLAT, label=np.full(10, 7, np.float32)
    )
    with pytest.raises(CaffeCompatError, match=r'"loss" \(SoftmaxWithLoss\): label 7 is outside'):
        net.forward(arrays)


@pytest.mark.parametrize(
    "weights, message",
    [
        ("", "loss_weight must be unspecified or specified once per top blob"),
        ("loss_weight: 1 loss_weight: 0", "second top"),
    ],
)
def test_softmax_loss_with_a_second_top_is_refused_as_caffe_aborts(tmp_path, weights, message):
    """One default weight for two tops, or two weights copied to the inner Softmax's one top:
    Caffe's SetLossWeights aborts either way (BVLC issue #2968)."""
    text = inputs_layer(data=FLAT, label=FLAT_LABELS) + (
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" '
        f'top: "loss" top: "prob" {weights} }}'
    )
    with pytest.raises(NetDefinitionError, match=message):
        make_net(tmp_path, text)
