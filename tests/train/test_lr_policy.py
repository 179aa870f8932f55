"""Caffe's learning-rate policies: formulas from sgd_solver.cpp, float rounding, multistep's
state, and the CHECKs as one-line errors. Real Caffe's rates (recorded) are in test_solver_rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffe_compat.errors import SolverDefinitionError
from caffe_compat.proto import caffe_pb2
from caffe_compat.train.lr_policy import LrPolicy


def policy(**fields) -> LrPolicy:
    param = caffe_pb2.SolverParameter(**fields)
    return LrPolicy.from_solver(param)


def test_rates_are_caffes_floats():
    # base_lr 0.1 is read as the float 0.100000001 and stays so.
    rate, _ = policy(base_lr=0.1, lr_policy="fixed").rate(123)
    assert rate == float(np.float32(0.1)) and rate != 0.1


@pytest.mark.parametrize(
    ("fields", "formula"),
    [
        ({"lr_policy": "step", "gamma": 0.1, "stepsize": 10}, lambda b, i: b * 0.1 ** (i // 10)),
        ({"lr_policy": "exp", "gamma": 0.95}, lambda b, i: b * 0.95**i),
        (
            {"lr_policy": "inv", "gamma": 1e-3, "power": 0.75},
            lambda b, i: b * (1 + 1e-3 * i) ** -0.75,
        ),
        ({"lr_policy": "poly", "power": 2.0, "max_iter": 50}, lambda b, i: b * (1 - i / 50) ** 2),
        (
            {"lr_policy": "sigmoid", "gamma": 0.2, "stepsize": 20},
            lambda b, i: b / (1 + math.exp(-0.2 * (i - 20))),
        ),
    ],
)
def test_policy_formulas(fields, formula):
    p = policy(base_lr=0.02, **fields)
    for iteration in range(0, 50, 7):
        rate, _ = p.rate(iteration)
        assert rate == pytest.approx(formula(0.02, iteration), rel=1e-5)  # float32 arithmetic
        assert rate == float(np.float32(rate))  # a float32 value, as Caffe's Dtype


def test_multistep_advances_one_step_per_call_as_caffe():
    """A repeated step value delays the second drop by one iteration (current_step_ advances at
    most once per GetLearningRate call)."""
    p = policy(base_lr=1.0, lr_policy="multistep", gamma=0.5, stepvalue=[3, 8, 8, 15])
    rates = p.rates(range(20))
    exponents = [0] * 3 + [1] * 5 + [2] + [3] * 6 + [4] * 5
    assert rates == [0.5**e for e in exponents]


def test_multistep_resumes_from_a_saved_step():
    p = policy(base_lr=1.0, lr_policy="multistep", gamma=0.1, stepvalue=[5, 10])
    rate, step = p.rate(12, current_step=1)  # restored at iter 12 with current_step 1
    assert step == 2 and rate == pytest.approx(0.01)


def test_step_sets_current_step():
    _, step = policy(base_lr=1, lr_policy="step", gamma=0.1, stepsize=4).rate(9)
    assert step == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"lr_policy": "cosine"}, "unknown learning rate policy"),
        ({}, "lr_policy is not set"),
        ({"lr_policy": "step", "gamma": 0.1}, "stepsize must be > 0"),
        ({"lr_policy": "exp", "gamma": -0.5}, "gamma must be >= 0"),
        ({"lr_policy": "sigmoid", "gamma": -1, "stepsize": 3}, "gamma must be >= 0"),
        ({"lr_policy": "poly", "power": 1}, "max_iter must be > 0"),
    ],
)
def test_bad_policies_are_one_line(fields, message):
    with pytest.raises(SolverDefinitionError, match=message) as info:
        LrPolicy.from_solver(caffe_pb2.SolverParameter(base_lr=0.1, **fields), path="s.prototxt")
    assert str(info.value).startswith("s.prototxt: ")
