"""The training engine against real BVLC Caffe's own forward and backward, recorded by
tests/train/data/caffe/record.py (pycaffe, CPU, OpenBLAS) on the nets beside it: every blob's data
and diff, every parameter diff after one and after two backward passes (they accumulate) and
BatchNorm's running sums, each within 1e-5 x the largest magnitude of Caffe's array (float32 on
both sides, summed in other orders). An array that is only float32 round-off in Caffe (a bias
right before a batch normalisation, whose true diff is 0) is judged against 1% of the net's
largest diff instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caffe_compat.train import TrainNet

DATA = Path(__file__).resolve().parent / "data" / "caffe"
ROOT = Path(__file__).resolve().parents[2]
CASES = sorted(p.stem for p in DATA.glob("*.prototxt"))
TOL = 1e-5


def _error(mine, theirs, floor: float = 1e-6) -> float:
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    assert mine.size == theirs.size, (mine.shape, theirs.shape)
    scale = max(float(np.abs(theirs).max(initial=0.0)), floor)
    return float(np.abs(mine.reshape(-1) - theirs.reshape(-1)).max(initial=0.0)) / scale


def _floor(recorded) -> float:
    diffs = [recorded[k] for k in recorded.files if k.startswith(("diff/", "param_diff"))]
    return 1e-2 * max(float(np.abs(d).max(initial=0.0)) for d in diffs)


def _net(case: str, recorded) -> TrainNet:
    phase = "TEST" if case.endswith("_test") else "TRAIN"
    net = TrainNet(DATA / f"{case}.prototxt", phase=phase, seed=0)
    for key in recorded.files:  # in Caffe's order: a shared blob takes its last layer's values
        if key.startswith("param/"):
            _, layer, index = key.split("/")
            net.params[layer][int(index)].data = recorded[key]
    return net


@pytest.mark.parametrize("case", CASES)
def test_matches_real_caffe(case, monkeypatch):
    monkeypatch.chdir(ROOT)  # InfogainLoss's source is relative to the working directory
    recorded = np.load(DATA / f"{case}.npz")
    net = _net(case, recorded)
    feeds = {k.split("/", 1)[1]: recorded[k] for k in recorded.files if k.startswith("input/")}
    errors: dict[str, float] = {}
    floor = _floor(recorded)
    net.forward(feeds)
    net.backward()
    blobs = net.blobs
    for key in recorded.files:
        kind, _, name = key.partition("/")
        if kind in ("data", "diff") and name in blobs:
            mine = blobs[name].data if kind == "data" else blobs[name].diff
            errors[key] = _error(mine, recorded[key], floor if kind == "diff" else 1e-6)
        elif kind == "param_diff":
            layer, index = name.split("/")
            errors[key] = _error(net.params[layer][int(index)].diff, recorded[key], floor)
    compared = {k.split("/", 1)[1] for k in errors if k.startswith("diff/")}
    assert compared >= set(feeds), "every input's diff is compared"
    net.forward(feeds)
    net.backward()  # parameter diffs accumulate; BatchNorm's sums move again
    for key in recorded.files:
        kind, _, name = key.partition("/")
        if kind in ("param_diff2", "after"):
            layer, index = name.split("/")
            param = net.params[layer][int(index)]
            diff = kind == "param_diff2"
            errors[key] = _error(
                param.diff if diff else param.data, recorded[key], floor if diff else 1e-6
            )
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f"{worst}: {errors[worst]:.3g} x max from real Caffe"
