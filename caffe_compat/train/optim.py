"""Caffe's solvers for any PyTorch module: ``CaffeOptimizer`` plus the ``CaffeLR`` scheduler.

The same update as ``caffe-compat train`` (``solver_rules``), on ``p.grad`` of ordinary torch
parameters, so a converted model fine-tunes in a plain PyTorch loop exactly as Caffe would have
trained it::

    opt = CaffeOptimizer(param_groups(model, net), type="SGD", base_lr=0.001, momentum=0.9,
                         weight_decay=5e-4)
    sched = CaffeLR(opt, policy="step", gamma=0.1, stepsize=10000)
    for batch in data:
        opt.zero_grad(); loss(model(batch)).backward(); opt.step(); sched.step()

Where Caffe differs from ``torch.optim`` (and this follows Caffe):

- SGD puts the rate inside the momentum history (``h = m h + lr g``; torch: ``h = m h + g``,
  step ``lr h``): identical at a fixed rate, but after a rate change Caffe's old rate keeps acting
  through momentum, torch's does not.
- Weight decay is added to the gradient before the rule in every solver, Adam included (L2, not
  AdamW's decoupled decay); ``regularization_type="L1"`` adds ``wd * sign(w)``.
- Adam adds ``delta`` to the uncorrected ``sqrt(v)`` and folds both bias corrections into the
  rate; AdaGrad and RMSProp add ``delta`` after the root; AdaDelta applies the rate after its
  update history. ``Nesterov`` steps ``(1+m) h_new - m h_old``.
- ``lr_mult``/``decay_mult`` per parameter group scale the rate and the decay (Caffe's ParamSpec).
- ``clip_gradients`` scales all gradients by their global L2 norm, before ``iter_size``
  normalisation (so it sees the sum of the accumulated passes); ``iter_size`` divides the
  accumulated gradient (call backward ``iter_size`` times, then ``step`` once).
- A parameter whose ``grad`` is None is updated as a zero gradient (Caffe updates every learnable
  blob: momentum and decay still act). Leave frozen parameters out of the optimizer.
- Every value is float32 and the rate is Caffe's float (``lr_policy``), so a replay matches
  Caffe's numbers, not just its formulas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .lr_policy import LrPolicy, f32
from .solver_rules import (
    UpdateSettings,
    clip_scale,
    compute_update,
    normalize,
    regularize,
    solver_type,
)

_ITER = "caffe_iter"


class CaffeOptimizer(Optimizer):
    """One of Caffe's six solvers (``type``: SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam).

    ``lr`` of a group is the rate before ``lr_mult`` (the scheduler sets it; ``base_lr`` is its
    start). Per-parameter state ``history`` (and ``history2`` for AdaDelta/Adam) is Caffe's."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        *,
        type: str = "SGD",
        base_lr: float = 0.01,
        momentum: float = 0.0,
        momentum2: float = 0.999,
        delta: float = 1e-8,
        rms_decay: float = 0.99,
        weight_decay: float = 0.0,
        regularization_type: str = "L2",
        clip_gradients: float = -1.0,
        iter_size: int = 1,
        lr_mult: float = 1.0,
        decay_mult: float = 1.0,
    ) -> None:
        self.settings = UpdateSettings(
            type=type,
            momentum=f32(momentum),
            momentum2=f32(momentum2),
            delta=f32(delta),
            rms_decay=f32(rms_decay),
            weight_decay=f32(weight_decay),
            regularization_type=regularization_type,
            clip_gradients=f32(clip_gradients),
            iter_size=int(iter_size),
        )
        defaults = {"lr": f32(base_lr), "lr_mult": lr_mult, "decay_mult": decay_mult}
        super().__init__(params, defaults)
        self.state[_ITER] = 0

    @classmethod
    def from_solver(
        cls, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], solver: Any
    ) -> CaffeOptimizer:
        """From a ``SolverParameter`` (or a solver prototxt path)."""
        solver = _solver_param(solver)
        return cls(
            params,
            type=solver_type(solver),
            base_lr=solver.base_lr,
            momentum=solver.momentum,
            momentum2=solver.momentum2,
            delta=solver.delta,
            rms_decay=solver.rms_decay,
            weight_decay=solver.weight_decay,
            regularization_type=solver.regularization_type,
            clip_gradients=solver.clip_gradients,
            iter_size=solver.iter_size,
        )

    @property
    def iteration(self) -> int:
        """Caffe's ``iter``: updates made so far."""
        return int(self.state[_ITER])

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        s = self.settings
        members = [(g, p) for g in self.param_groups for p in g["params"]]
        grads = [p.grad for _, p in members if p.grad is not None]
        _, scale = clip_scale(grads, s.clip_gradients)
        iteration = self.iteration
        for group, p in members:
            state = self.state[p]
            if "history" not in state:
                state["history"] = torch.zeros_like(p, dtype=torch.float32)
                if s.history_sets == 2:
                    state["history2"] = torch.zeros_like(p, dtype=torch.float32)
            g = (
                torch.zeros_like(p, dtype=torch.float32)
                if p.grad is None
                else p.grad.detach().to(torch.float32, copy=True)
            )
            if scale != 1.0:
                g.mul_(scale)
            normalize(s, g)
            regularize(s, p.detach(), g, group["decay_mult"])
            local = f32(f32(group["lr"]) * f32(group["lr_mult"]))
            compute_update(s, g, state["history"], state.get("history2"), local, iteration)
            p.sub_(g.to(p.dtype))
        self.state[_ITER] = iteration + 1
        return loss


class CaffeLR(LRScheduler):
    """Caffe's ``lr_policy`` as a scheduler: sets every group's ``lr`` to the policy's rate at
    the optimizer's iteration (call ``step()`` after each ``optimizer.step()``).

    Give a ``policy`` name with its fields (``gamma``, ``power``, ``stepsize``, ``stepvalue``,
    ``max_iter``), an :class:`LrPolicy`, or a ``SolverParameter`` / solver path as ``solver``."""

    def __init__(
        self,
        optimizer: Optimizer,
        policy: str | LrPolicy = "fixed",
        *,
        solver: Any = None,
        base_lr: float | None = None,
        gamma: float = 0.0,
        power: float = 0.0,
        stepsize: int = 0,
        stepvalue: Iterable[int] = (),
        max_iter: int = 0,
        last_epoch: int = -1,
    ) -> None:
        if solver is not None:
            self.policy = LrPolicy.from_solver(_solver_param(solver))
        elif isinstance(policy, LrPolicy):
            self.policy = policy
        else:
            start = base_lr if base_lr is not None else optimizer.param_groups[0]["lr"]
            self.policy = LrPolicy(
                policy=policy,
                base_lr=f32(start),
                gamma=f32(gamma),
                power=f32(power),
                stepsize=int(stepsize),
                stepvalues=tuple(int(v) for v in stepvalue),
                max_iter=int(max_iter),
            )
            self.policy.check()
        self.current_step = 0
        self._at: tuple[int, float] | None = None
        super().__init__(optimizer, last_epoch)

    def _rate(self, iteration: int) -> float:
        if self._at is None or self._at[0] != iteration:
            rate, self.current_step = self.policy.rate(iteration, self.current_step)
            self._at = (iteration, rate)
        return self._at[1]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        iteration = getattr(self.optimizer, "iteration", self.last_epoch)
        return [self._rate(int(iteration))] * len(self.optimizer.param_groups)


def _solver_param(solver: Any) -> Any:
    if isinstance(solver, (str, bytes)) or hasattr(solver, "__fspath__"):
        from ..io import load_solver

        return load_solver(solver)
    return solver


def param_groups(
    module: Any, net: Any = None, *, include_frozen: bool = False
) -> list[dict[str, Any]]:
    """Parameter groups with each blob's ``lr_mult``/``decay_mult``, for :class:`CaffeOptimizer`.

    ``module`` is a converted model (``caffe_compat.to_torch``: its submodules are the Caffe
    layers, their blobs in Caffe's order), any module whose children are named after the layers,
    or a ``TrainNet`` (its ``learnable_params`` carry their multipliers). ``net`` (a
    ``NetParameter`` or a prototxt path) gives the ``param { }`` specs; without it every blob has
    multipliers 1. Blobs with ``lr_mult: 0`` are left out unless ``include_frozen`` (Caffe still
    keeps their history and decays it into Adam's moments)."""
    if hasattr(module, "learnable_params"):
        return [
            {"params": [p.tensor], "lr_mult": p.lr_mult, "decay_mult": p.decay_mult}
            for p in module.learnable_params
            if include_frozen or p.lr_mult != 0
        ]
    specs = _param_specs(net) if net is not None else {}
    groups: list[dict[str, Any]] = []
    placed: set[int] = set()
    for layer, sub in _layers_of(module, specs):
        blobs = _blobs_of(sub)
        for index, param in enumerate(blobs):
            placed.add(id(param))
            layer_specs = specs.get(layer, [])
            lr_mult, decay_mult = layer_specs[index] if index < len(layer_specs) else (1.0, 1.0)
            if lr_mult == 0 and not include_frozen:
                continue
            groups.append({"params": [param], "lr_mult": lr_mult, "decay_mult": decay_mult})
    rest = [p for p in module.parameters() if id(p) not in placed]
    if rest:
        groups.append({"params": rest, "lr_mult": 1.0, "decay_mult": 1.0})
    return groups


def _layers_of(module: torch.nn.Module, specs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(Caffe layer name, submodule) pairs: a converted model's own map, else children named
    after the layers (``.`` in a name becomes ``_``, as the converter names them)."""
    graph, keys = getattr(module, "graph", None), getattr(module, "_keys", None)
    if graph is not None and keys is not None and hasattr(module, "layers"):
        return [(node.name, module.layers[key]) for node, key in zip(graph.nodes, keys)]
    children = dict(module.named_children())
    if set(children) == {"layers"} and isinstance(children["layers"], torch.nn.ModuleDict):
        children = dict(children["layers"].named_children())
    by_key = {layer.replace(".", "_") or "_": layer for layer in specs}
    return [(by_key.get(name, name), child) for name, child in children.items()]


def _blobs_of(sub: torch.nn.Module) -> list[torch.nn.Parameter]:
    """A layer module's parameters in Caffe's blob order (``blob_slots`` where it names them)."""
    slots = getattr(sub, "blob_slots", None)
    if slots:
        found = []
        for path in slots:
            try:
                found.append(sub.get_parameter(path))
            except AttributeError:
                continue  # a frozen blob held as a buffer
        return found
    return list(sub.parameters())


def _param_specs(net: Any) -> dict[str, list[tuple[float, float]]]:
    if isinstance(net, (str, bytes)) or hasattr(net, "__fspath__"):
        from ..io import load_prototxt
        from ..io.upgrade import upgrade_net

        net, _ = load_prototxt(net)
        upgrade_net(net)
    return {
        layer.name: [(float(p.lr_mult), float(p.decay_mult)) for p in layer.param]
        for layer in net.layer
    }
