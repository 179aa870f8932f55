"""The loss layers' float64 backward against central differences (Caffe's GradientChecker, as
BVLC's test_*_loss_layer.cpp run it), labels and the infogain matrix left out as Caffe does."""

from __future__ import annotations

import numpy as np
import pytest

RNG = np.random.default_rng(21)
X = RNG.normal(size=(4, 5))
LABEL = np.array([0.0, 3.0, 4.0, 1.0])


def loss(kind: str, bottoms=("data", "label"), params: str = "") -> str:
    wiring = " ".join(f'bottom: "{b}"' for b in bottoms)
    return f'layer {{ name: "loss" type: "{kind}" {wiring} top: "loss" {params} }}\n'


@pytest.mark.parametrize(
    "params",
    [
        "",
        "loss_param { ignore_label: 3 normalization: FULL }",
        "loss_param { normalization: BATCH_SIZE }",
        "loss_param { normalization: NONE }",
        "loss_param { normalize: false }",
    ],
)
def test_softmax_with_loss(grad_check, params):
    grad_check(loss("SoftmaxWithLoss", params=params), phase="TRAIN", data=X, label=LABEL)


def test_softmax_with_loss_over_spatial_positions(grad_check):
    x = RNG.normal(size=(2, 3, 2, 2))
    label = RNG.integers(0, 3, size=(2, 1, 2, 2)).astype(np.float64)
    grad_check(loss("SoftmaxWithLoss"), phase="TRAIN", data=x, label=label)


def test_euclidean(grad_check):
    report = grad_check(
        loss("EuclideanLoss", ("data", "target")),
        phase="TRAIN",
        data=X,
        target=RNG.normal(size=(4, 5)),
    )
    assert report.checked == 2 * X.size  # both bottoms get a diff


@pytest.mark.parametrize("params", ["", "loss_param { ignore_label: -1 normalization: VALID }"])
def test_sigmoid_cross_entropy(grad_check, params):
    target = RNG.integers(-1, 2, size=(4, 5)).astype(np.float64)
    grad_check(
        loss("SigmoidCrossEntropyLoss", ("data", "target"), params),
        phase="TRAIN",
        data=X,
        target=target,
    )


@pytest.mark.parametrize("params, kink", [("", 0.01), ("hinge_loss_param { norm: L2 }", -1)])
def test_hinge(grad_check, params, kink):
    # L1's kink is where 1 + the (signed) score is 0: scores of +-1
    grad_check(
        loss("HingeLoss", params=params),
        phase="TRAIN",
        data=X,
        label=LABEL,
        kink=1,
        kink_range=kink,
    )


@pytest.mark.parametrize("legacy", ["false", "true"])
def test_contrastive(grad_check, legacy):
    a, b = RNG.normal(size=(6, 3, 1, 1)), RNG.normal(size=(6, 3, 1, 1))
    similar = np.array([1, 0, 0, 1, 0, 0.0]).reshape(6, 1, 1, 1)
    params = f"contrastive_loss_param {{ margin: 2 legacy_version: {legacy} }}"
    # Caffe divides by d + 1e-4 where the derivative has d: a few 1e-6 off the differences
    grad_check(
        loss("ContrastiveLoss", ("a", "b", "similar"), params),
        phase="TRAIN",
        a=a,
        b=b,
        similar=similar,
        bottoms=[0, 1],
        threshold=1e-4,
    )


def test_infogain_with_h_as_a_bottom(grad_check):
    h = RNG.uniform(size=(5, 5))
    report = grad_check(
        loss("InfogainLoss", ("data", "label", "H")), phase="TRAIN", data=X, label=LABEL, H=h
    )
    assert report.checked == X.size  # neither the labels nor H get a diff


def test_multinomial_logistic(grad_check):
    grad_check(
        loss("MultinomialLogisticLoss"),
        phase="TRAIN",
        data=RNG.uniform(0.1, 1.0, size=(4, 5)),
        label=LABEL,
    )
