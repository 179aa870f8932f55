"""Caffe's learning-rate policies (``SGDSolver::GetLearningRate``), rounded to float as Caffe's are.

Caffe computes the rate in ``float`` from ``float`` solver fields: ``base_lr: 0.1`` is the
float 0.100000001, and the powers of ``step``/``exp``/``multistep`` (``pow(float, int)``, which
C++ evaluates in double) are rounded to float once at the end. Reproducing that keeps a replay
of a Caffe run bit-for-bit on the rate.

``multistep`` is stateful: ``current_step`` advances by at most one per call, when the iteration
has reached the next step value (so unsorted or repeated step values act as in Caffe), and it is
saved in snapshots. ``step`` sets ``current_step`` to ``iter // stepsize`` as a side effect, which
is what Caffe's snapshots of step-policy runs hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import SolverDefinitionError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")

_f32 = np.float32


def f32(value: float) -> float:
    """``value`` rounded to float32, as a Python float."""
    return float(_f32(value))


@dataclass(frozen=True)
class LrPolicy:
    """The fields of ``SolverParameter`` that the rate depends on, as Caffe reads them (float)."""

    policy: str
    base_lr: float
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 0
    stepvalues: tuple[int, ...] = ()
    max_iter: int = 0

    @classmethod
    def from_solver(cls, param: object, *, path: str | None = None) -> LrPolicy:
        """Read and check a ``SolverParameter`` (Caffe checks these at the first update; a
        definition that would abort Caffe mid-run is refused up front here)."""
        policy = cls(
            policy=str(getattr(param, "lr_policy", "")),
            base_lr=f32(getattr(param, "base_lr", 0.0)),
            gamma=f32(getattr(param, "gamma", 0.0)),
            power=f32(getattr(param, "power", 0.0)),
            stepsize=int(getattr(param, "stepsize", 0)),
            stepvalues=tuple(int(v) for v in getattr(param, "stepvalue", ())),
            max_iter=int(getattr(param, "max_iter", 0)),
        )
        policy.check(path=path)
        return policy

    def check(self, *, path: str | None = None) -> None:
        """Caffe's CHECKs of ``GetLearningRate``, as one line each."""

        def bad(reason: str) -> SolverDefinitionError:
            return SolverDefinitionError(f'lr_policy "{self.policy}": {reason}', path=path)

        if self.policy not in POLICIES:
            known = ", ".join(POLICIES)
            if not self.policy:
                raise SolverDefinitionError(f"lr_policy is not set (one of {known})", path=path)
            raise bad(f"unknown learning rate policy (Caffe knows {known})")
        if self.policy in ("step", "sigmoid") and self.stepsize <= 0:
            raise bad(f"stepsize must be > 0, not {self.stepsize}")
        if self.policy in ("step", "exp", "inv", "multistep", "sigmoid") and not self.gamma >= 0:
            raise bad(f"gamma must be >= 0, not {self.gamma:g}")
        if self.policy == "poly" and self.max_iter <= 0:
            raise bad(f"max_iter must be > 0, not {self.max_iter}")

    def rate(self, iteration: int, current_step: int = 0) -> tuple[float, int]:
        """The rate at ``iteration`` (a float32 value) and the new ``current_step``."""
        base, gamma = self.base_lr, self.gamma
        policy = self.policy
        if policy == "fixed":
            return base, current_step
        if policy == "step":
            current_step = iteration // self.stepsize
            return f32(base * _pow(gamma, current_step)), current_step
        if policy == "exp":
            return f32(base * _pow(gamma, iteration)), current_step
        if policy == "multistep":
            values = self.stepvalues
            if current_step < len(values) and iteration >= values[current_step]:
                current_step += 1
            return f32(base * _pow(gamma, current_step)), current_step
        if policy == "inv":
            # Dtype(1) + gamma * iter: float arithmetic; pow(float, float) in float.
            x = f32(1.0 + f32(gamma * f32(iteration)))
            return f32(base * f32(_pow(x, -self.power))), current_step
        if policy == "poly":
            x = f32(1.0 - f32(f32(iteration) / f32(self.max_iter)))
            return f32(base * f32(_pow(x, self.power))), current_step
        if policy == "sigmoid":
            arg = f32(-gamma * f32(f32(iteration) - f32(self.stepsize)))
            e = f32(_exp(arg))
            return f32(base * f32(1.0 / f32(1.0 + e))), current_step
        raise AssertionError(policy)  # check() refused it

    def rates(self, iterations: Sequence[int]) -> list[float]:
        """The rates of consecutive calls at ``iterations`` from a fresh start (a table)."""
        out, step = [], 0
        for it in iterations:
            value, step = self.rate(it, step)
            out.append(value)
        return out


def _pow(x: float, y: float) -> float:
    """C's pow: inf on overflow, nan for a negative base with a fractional exponent."""
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.inf
    except ValueError:
        if x == 0 and y < 0:
            return math.inf
        return math.nan


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf
