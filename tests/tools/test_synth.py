"""Synthesized weights: the right shapes, deterministic per seed, and outputs that vary."""

from __future__ import annotations

import numpy as np
import torch

from caffe_compat.converters.torch.model import CaffeNet
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify.inputs import feeds_for


def test_shapes_match_the_net_and_seed_determines_values(shared):
    first = synthesize(load_net(shared / "deploy_age.prototxt"), seed=4)
    again = synthesize(load_net(shared / "deploy_age.prototxt"), seed=4)
    other = synthesize(load_net(shared / "deploy_age.prototxt"), seed=5)
    assert [a.shape for a in first["fc6"]] == [(512, 18816), (512,)]
    assert [a.shape for a in first["conv1"]] == [(96, 3, 7, 7), (96,)]
    for name in first:
        for a, b in zip(first[name], again[name]):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first["conv1"][0], other["conv1"][0])


def _predictions(loaded) -> np.ndarray:
    feeds = feeds_for(loaded.graph.inputs, 32, seed=99)
    with torch.no_grad():
        return CaffeNet(loaded.graph)(torch.from_numpy(feeds["data"])).numpy()


def test_calibrated_outputs_vary_where_plain_he_saturates(shared):
    calibrated = load_net(shared / "deploy_age.prototxt")
    synthesize(calibrated, seed=1)
    prob = _predictions(calibrated)
    assert len(set(prob.argmax(1).tolist())) >= 4
    assert prob.max(1).mean() < 0.9
    plain = load_net(shared / "deploy_age.prototxt")
    synthesize(plain, seed=1, method="he")
    prob = _predictions(plain)
    assert prob.max(1).mean() > prob.max(1).min()  # sanity: it runs
    assert np.bincount(prob.argmax(1)).max() >= 16  # one class takes most inputs


def test_fillers_method_follows_the_train_val_fillers(shared):
    loaded = load_net(shared / "train_val_age_fold0.prototxt")
    blobs = synthesize(loaded, seed=0, method="fillers")
    weight, bias = blobs["conv1"]
    assert abs(weight.std() - 0.01) < 0.001  # gaussian std 0.01 in the released train_val
    assert np.all(bias == 0)
