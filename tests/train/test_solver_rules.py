"""The update rules (solver_rules.py) against real Caffe's recorded runs (data/caffe_runs): from
Caffe's weights and the gradients Caffe computed at each of 20 iterations, every solver, lr
policy, ``iter_size``, clipping, L1 decay, frozen blobs and BatchNorm nets must give Caffe's next
weights, rates and final histories. These isolate the solver from the net's gradients
(test_solver.py runs whole nets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _caffe_runs import CASES, Blob, load_run, relative_error

from caffe_compat.train.lr_policy import LrPolicy
from caffe_compat.train.solver_rules import UpdateRule, UpdateSettings

TOLERANCE = 1e-5  # of each blob's largest value; the issue asks 1e-4


def replay(run):
    """Step through Caffe's iterations with the rule: each step starts from Caffe's weights
    (so errors cannot compound) and its history from our own previous step."""
    settings = UpdateSettings.from_solver(run.solver)
    policy = LrPolicy.from_solver(run.solver)
    count = len(run.names)
    rule = UpdateRule(settings, [run.weights(k).shape[1:] for k in range(count)])
    step, worst, rates = 0, 0.0, []
    # Restore cases: Caffe wrote its history at iteration 10 and read it back in a new solver;
    # here the history simply carries on (the file round trip is exact: test_solverstate).
    for t in range(run.steps):
        iteration = int(run.arrays["iters"][t])
        assert iteration == t
        rate, step = policy.rate(iteration, step)
        rates.append(rate)
        blobs = [
            Blob(
                torch.tensor(run.weights(k)[t]),
                torch.tensor(run.grads(k)[t]),
                *run.mults[k],
            )
            for k in range(count)
        ]
        rule.apply(blobs, rate, iteration)
        for k, blob in enumerate(blobs):
            if run.mults[k][0] == 0:
                # Bit-exact through the update (BatchNorm statistics change in the forward).
                assert torch.equal(blob.data, torch.tensor(run.weights(k)[t]))
                if run.statistics[k]:
                    continue
            worst = max(worst, relative_error(blob.data.numpy(), run.weights(k)[t + 1]))
    return rule, worst, rates


@pytest.mark.parametrize("name", CASES)
def test_rule_replays_caffe(name):
    run = load_run(name)
    rule, worst, rates = replay(run)
    assert worst <= TOLERANCE, f"{name}: weights differ by {worst:.2e} of max"
    if "lr" in run.arrays:
        np.testing.assert_array_equal(np.float32(rates), run.arrays["lr"])
    caffe_history = run.history()
    assert len(caffe_history) == len(rule.history)
    for j, (ours, theirs) in enumerate(zip(rule.history, caffe_history)):
        error = relative_error(ours.numpy().reshape(theirs.shape), theirs)
        assert error <= TOLERANCE, f"{name}: history {j} differs by {error:.2e} of max"


def test_adagrad_and_rmsprop_refuse_momentum():
    with pytest.raises(Exception, match="momentum must be 0 for AdaGrad"):
        UpdateSettings(type="AdaGrad", momentum=0.9)
    with pytest.raises(Exception, match="rms_decay must be in"):
        UpdateSettings(type="RMSProp", rms_decay=1.0)
