"""Caffe's parameter update (``SGDSolver::ApplyUpdate`` and each solver's ``ComputeUpdateValue``).

One update, in Caffe's order: clip the diffs by their global L2 norm (of the accumulated SUM when
``iter_size`` > 1), then per parameter scale by ``1/iter_size``, add weight decay (L2:
``wd * decay_mult * w``; L1: ``wd * decay_mult * sign(w)``), turn the diff into the step with
the solver's rule, and subtract it (``Net::Update``). Everything is float32, as Caffe's ``float``
solvers are, and vectorised per blob.

The rules, where they differ from textbook forms (and from ``torch.optim``):

- SGD: ``h = momentum * h + local_lr * g``; the step is ``h``. The rate lives inside the history,
  so after a rate drop the old rate keeps acting through momentum.
- Nesterov: ``h_new`` as SGD; the step is ``(1 + m) * h_new - m * h_old``.
- AdaGrad: ``h += g^2``; step ``local_lr * g / (sqrt(h) + delta)``.
- RMSProp: ``h = rms_decay * h + (1 - rms_decay) * g^2``; step as AdaGrad.
- AdaDelta: ``h_g = m h_g + (1-m) g^2``; ``u = g * sqrt((h_u + delta) / (h_g + delta))``;
  ``h_u = m h_u + (1-m) u^2`` (before the rate); step ``local_lr * u``.
- Adam: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``, ``t = iter + 1``; step
  ``local_lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + delta)`` (delta on the uncorrected root).

History blobs are in Caffe's order: one per learnable parameter, then (AdaDelta, Adam) a second
set; snapshots store exactly this list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..errors import SolverDefinitionError
from .lr_policy import f32

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
# SolverParameter.solver_type, the enum Caffe upgrades to ``type`` (UpgradeSolverType).
LEGACY_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}
_TWO_HISTORIES = ("AdaDelta", "Adam")


class ParamLike(Protocol):
    """What an update needs of a learnable blob (``train.net.Param`` and the optimizer's)."""

    data: torch.Tensor
    diff: torch.Tensor
    lr_mult: float
    decay_mult: float


def solver_type(param: object, *, path: str | None = None) -> str:
    """The solver's type by Caffe's rules: ``type`` (default SGD), or the legacy ``solver_type``
    enum, never both."""
    has = getattr(param, "HasField", None)
    has_type = bool(has and has("type"))
    has_legacy = bool(has and has("solver_type"))
    if has_type and has_legacy:
        raise SolverDefinitionError(
            "solver_type (the old enum) and type (its string replacement) are both set; keep type",
            path=path,
        )
    if has_legacy:
        return LEGACY_TYPES[int(param.solver_type)]  # type: ignore[attr-defined]
    name = str(getattr(param, "type", "SGD") or "SGD")
    if name not in SOLVER_TYPES:
        raise SolverDefinitionError(
            f'unknown solver type "{name}" (Caffe knows {", ".join(SOLVER_TYPES)})', path=path
        )
    return name


@dataclass(frozen=True)
class UpdateSettings:
    """The solver fields an update reads, as float32 values (Caffe's ``float`` fields)."""

    type: str = "SGD"
    momentum: float = 0.0
    momentum2: float = f32(0.999)
    delta: float = f32(1e-8)
    rms_decay: float = f32(0.99)
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    clip_gradients: float = -1.0
    iter_size: int = 1

    def __post_init__(self) -> None:
        self.check()

    @classmethod
    def from_solver(cls, param: object, *, path: str | None = None) -> UpdateSettings:
        """Read a ``SolverParameter`` and apply Caffe's checks, each as one line."""
        try:
            return cls(
                type=solver_type(param, path=path),
                momentum=f32(getattr(param, "momentum", 0.0)),
                momentum2=f32(getattr(param, "momentum2", 0.999)),
                delta=f32(getattr(param, "delta", 1e-8)),
                rms_decay=f32(getattr(param, "rms_decay", 0.99)),
                weight_decay=f32(getattr(param, "weight_decay", 0.0)),
                regularization_type=str(getattr(param, "regularization_type", "L2")),
                clip_gradients=f32(getattr(param, "clip_gradients", -1.0)),
                iter_size=int(getattr(param, "iter_size", 1)),
            )
        except SolverDefinitionError as exc:
            if exc.path or path is None:
                raise
            raise SolverDefinitionError(exc.reason, path=path) from None

    def check(self) -> None:
        if self.type not in SOLVER_TYPES:
            raise SolverDefinitionError(
                f'unknown solver type "{self.type}" (Caffe knows {", ".join(SOLVER_TYPES)})'
            )
        if self.type in ("AdaGrad", "RMSProp") and self.momentum != 0:
            raise SolverDefinitionError(
                f"momentum must be 0 for {self.type} (Caffe's CHECK), not {self.momentum:g}"
            )
        if self.type == "RMSProp" and not 0 <= self.rms_decay < 1:
            raise SolverDefinitionError(f"rms_decay must be in [0, 1), not {self.rms_decay:g}")
        if self.regularization_type not in ("L1", "L2"):
            raise SolverDefinitionError(
                f'unknown regularization_type "{self.regularization_type}" (L1 or L2)'
            )
        if self.iter_size < 1:
            raise SolverDefinitionError(f"iter_size must be >= 1, not {self.iter_size}")

    @property
    def history_sets(self) -> int:
        """History blobs per parameter: 2 for AdaDelta and Adam, else 1."""
        return 2 if self.type in _TWO_HISTORIES else 1


def clip_scale(diffs: Sequence[torch.Tensor], limit: float) -> tuple[float, float]:
    """``ClipGradients``: (the global L2 norm of ``diffs``, the factor to scale them by: 1 when
    within ``limit`` or clipping is off, ``limit < 0``)."""
    if limit < 0:
        return 0.0, 1.0
    sumsq = sum(float(torch.dot(d.reshape(-1), d.reshape(-1))) for d in diffs)
    norm = f32(math.sqrt(sumsq))
    return norm, (f32(limit / norm) if norm > limit else 1.0)


def normalize(settings: UpdateSettings, diff: torch.Tensor) -> None:
    """``Normalize``: the accumulated sum of ``iter_size`` passes becomes their mean."""
    if settings.iter_size > 1:
        diff.mul_(f32(1.0 / settings.iter_size))


def regularize(
    settings: UpdateSettings, data: torch.Tensor, diff: torch.Tensor, decay_mult: float
) -> None:
    """``Regularize``: L2 adds ``wd * decay_mult * w``, L1 ``wd * decay_mult * sign(w)``."""
    decay = f32(settings.weight_decay * f32(decay_mult))
    if not decay:
        return
    if settings.regularization_type == "L2":
        diff.add_(data, alpha=decay)
    else:
        diff.add_(torch.sign(data), alpha=decay)


def compute_update(
    settings: UpdateSettings,
    g: torch.Tensor,
    h: torch.Tensor,
    h2: torch.Tensor | None,
    local: float,
    iteration: int,
) -> None:
    """``ComputeUpdateValue``: turn the diff ``g`` into the step in place, updating the
    history ``h`` (and ``h2``, the second history of AdaDelta and Adam). ``local`` is the
    rate times the blob's ``lr_mult``; ``iteration`` is Caffe's ``iter`` (Adam's t - 1)."""
    s = settings
    if s.type == "SGD":
        h.mul_(s.momentum).add_(g, alpha=local)
        g.copy_(h)
    elif s.type == "Nesterov":
        old = h.clone()
        h.mul_(s.momentum).add_(g, alpha=local)
        g.copy_(old.mul_(-s.momentum).add_(h, alpha=f32(1.0 + s.momentum)))
    elif s.type in ("AdaGrad", "RMSProp"):
        if s.type == "AdaGrad":
            h.add_(g * g)
        else:
            h.mul_(s.rms_decay).add_(g * g, alpha=f32(1.0 - s.rms_decay))
        g.div_(torch.sqrt(h).add_(s.delta)).mul_(local)
    elif s.type == "AdaDelta":
        assert h2 is not None
        m, keep = s.momentum, f32(1.0 - s.momentum)
        h.mul_(m).add_(g * g, alpha=keep)
        g.mul_(torch.sqrt((h2 + s.delta).div_(h + s.delta)))
        h2.mul_(m).add_(g * g, alpha=keep)
        g.mul_(local)
    elif s.type == "Adam":
        assert h2 is not None
        b1, b2 = s.momentum, s.momentum2
        h.mul_(b1).add_(g, alpha=f32(1.0 - b1))
        h2.mul_(b2).add_(g * g, alpha=f32(1.0 - b2))
        t = iteration + 1
        correction = f32(math.sqrt(1.0 - b2**t) / (1.0 - b1**t))
        g.copy_(h).div_(torch.sqrt(h2).add_(s.delta)).mul_(f32(local * correction))
    else:  # pragma: no cover - UpdateSettings.check refused it
        raise AssertionError(s.type)


class UpdateRule:
    """The solver state (Caffe's ``history_``) and the update step over a list of parameters."""

    def __init__(
        self,
        settings: UpdateSettings,
        shapes: Sequence[Sequence[int]],
        *,
        device: torch.device | str = "cpu",
    ) -> None:
        self.settings = settings
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.device = torch.device(device)
        self.history: list[torch.Tensor] = [
            torch.zeros(s, dtype=torch.float32, device=self.device)
            for _ in range(settings.history_sets)
            for s in self.shapes
        ]
        self.last_norm = 0.0

    @property
    def history_bytes(self) -> int:
        return 4 * sum(int(h.numel()) for h in self.history)

    def set_history(
        self, arrays: Sequence[np.ndarray | torch.Tensor], *, path: str | None = None
    ) -> None:
        """Load a snapshot's history (Caffe's order); counts and sizes must match this net."""
        if len(arrays) != len(self.history):
            raise SolverDefinitionError(
                f"the solver state holds {len(arrays)} history blobs; this net and a "
                f"{self.settings.type} solver need {len(self.history)}",
                path=path,
            )
        for index, (slot, array) in enumerate(zip(self.history, arrays)):
            values = torch.as_tensor(np.asarray(array, dtype=np.float32))
            # Blob::FromProto reshapes; only the count must agree.
            if values.numel() != slot.numel():
                raise SolverDefinitionError(
                    f"history blob {index} holds {values.numel()} values (shape "
                    f"{list(values.shape)}); the net's parameter needs {slot.numel()} "
                    f"(shape {list(slot.shape)})",
                    path=path,
                )
            slot.copy_(values.reshape(slot.shape))

    def apply(self, params: Sequence[ParamLike], rate: float, iteration: int) -> None:
        """One ``ApplyUpdate`` at ``rate`` (already the policy's value) and Caffe's ``iter``:
        writes each step into ``diff`` and subtracts it from ``data``."""
        if len(params) != len(self.shapes):
            raise ValueError(f"{len(params)} parameters, the rule was made for {len(self.shapes)}")
        rate = f32(rate)
        count = len(self.shapes)
        two = self.settings.history_sets == 2
        with torch.no_grad():
            self.last_norm, scale = clip_scale(
                [p.diff for p in params], self.settings.clip_gradients
            )
            if scale != 1.0:
                for p in params:
                    p.diff.mul_(scale)
            for index, p in enumerate(params):
                normalize(self.settings, p.diff)
                regularize(self.settings, p.data, p.diff, p.decay_mult)
                local = f32(rate * f32(p.lr_mult))
                h2 = self.history[index + count] if two else None
                compute_update(self.settings, p.diff, self.history[index], h2, local, iteration)
            for p in params:
                p.data.sub_(p.diff)
