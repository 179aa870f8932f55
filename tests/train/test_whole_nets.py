"""Whole train nets through the training engine against the float64 reference (marked ``train``:
minutes on two cores): the Levi-Hassner age train_val net with weights written by real Caffe
(../shared), Dropout masks given to the judge."""

from __future__ import annotations

import numpy as np
import pytest
from _training import judge

from caffe_compat.train import TrainNet

pytestmark = pytest.mark.train


def test_levi_age_train_net_matches_the_reference(shared):
    prototxt = shared / "train_val_age_fold0.prototxt"
    rng = np.random.default_rng(0)
    shapes = {"data": (2, 3, 227, 227), "label": (2,)}
    weights = shared / "caffe_reference" / "age_seed3_caffe_written.caffemodel"
    net = TrainNet(
        prototxt, input_shapes=shapes, seed=3, weights=weights if weights.is_file() else None
    )
    assert net.input_names == ["data", "label"] and net.output_names == ["loss"]
    assert [p.owner for p in net.learnable_params][:2] == [("conv1", 0), ("conv1", 1)]
    assert [p.lr_mult for p in net.params["conv1"]] == [1, 2]  # blobs_lr 1 and 2 (V1)
    feeds = {
        "data": rng.normal(0, 50, size=shapes["data"]).astype(np.float32),
        "label": np.array([3, 6], np.float32),
    }
    # Each layer agrees with the reference within a few 1e-7 (test_gradients.py); through eight
    # float32 layers with saturated logits (|fc8| ~ 36) the errors compound to a few 1e-6, and
    # the bias of fc8, a sum that cancels over the batch, reaches ~2e-5 of its small maximum.
    worst = judge(net, feeds, tol=1e-4)
    assert worst["diffs"] <= 1e-5
    assert net.dropout_masks.keys() == {"drop6", "drop7"}


def test_levi_age_test_net_shares_the_train_nets_weights(shared):
    prototxt = shared / "train_val_age_fold0.prototxt"
    shapes = {"data": (2, 3, 227, 227), "label": (2,)}
    train = TrainNet(prototxt, input_shapes=shapes, seed=3)
    test = TrainNet(prototxt, phase="TEST", input_shapes=shapes, seed=4)
    test.share_trained_layers_with(train)
    assert test.output_names == ["accuracy", "loss"]
    feeds = {"data": np.zeros(shapes["data"], np.float32), "label": np.zeros(2, np.float32)}
    with np.errstate(all="ignore"):
        train.params["fc8"][1].data = np.arange(8, dtype=np.float32)  # the biases decide
    out = test.forward(feeds)
    assert float(out["accuracy"]) == 0.0  # class 7 wins, labels are 0
