"""pycaffe's solvers (``caffe.SGDSolver`` ... ``AdamSolver``, ``caffe.get_solver``) on the
training engine's ``Solver`` (caffe_compat/train/solver.py): the same loop, update rules, rate
policies, tests, snapshots and restores as ``caffe-compat train``, over pycaffe ``Net`` objects.

``solver.net`` and ``solver.test_nets`` are ordinary pycaffe nets: what Python writes into their
blobs (data, diff) is what the solver sees, and the update lands in the blobs. The solver's
state lives on the CPU beside the blobs; the nets run where ``caffe.set_mode_*`` says.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SolverDefinitionError
from ..proto import caffe_pb2
from . import _engine
from ._caffe import current_device

if TYPE_CHECKING:  # torch and the engine load with the first solver, not with ``import caffe``
    import torch

    from ..train.solver import NetSource


def on_host(device: torch.device) -> bool:
    return _engine.on_host(device)


class _Param:
    """One learnable blob as the update rule sees it: torch views of the blob's data and
    diff (the same memory), and its multipliers."""

    def __init__(self, blob: Any, lr_mult: float, decay_mult: float) -> None:
        self.blob = blob
        self.lr_mult = lr_mult
        self.decay_mult = decay_mult

    @property
    def data(self) -> torch.Tensor:
        import torch

        self.blob._sync()
        return torch.from_numpy(self.blob._view())

    @property
    def diff(self) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.blob.diff)


class _BlobView:
    def __init__(self, data: torch.Tensor) -> None:
        self.data = data


class NetAdapter:
    """A pycaffe ``Net`` with the face the solver engine drives (``TrainNet``'s)."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.learnable_params = _learnable(net)

    # the engine's calls
    @property
    def _generator(self) -> torch.Generator:
        return self.net._engine.generator(current_device())

    def forward(self, feeds: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        import torch

        engine = self.net._engine
        engine.feeds = {k: torch.as_tensor(v) for k, v in (feeds or {}).items()}
        self._loss = self.net._forward(0, len(self.net.layers) - 1)
        if not torch.is_grad_enabled():
            engine.forget()
        return {name: torch.from_numpy(self.net.blobs[name].data) for name in self.output_names}

    def forward_backward(self, feeds: dict[str, Any] | None = None) -> float:
        self.forward(feeds)
        self.net._backward(len(self.net.layers) - 1, 0)
        return self.loss

    @property
    def loss(self) -> float:
        return float(self._loss)

    @property
    def output_names(self) -> list[str]:
        return list(self.net.outputs)

    @property
    def blobs(self) -> dict[str, _BlobView]:
        import torch

        return {name: _BlobView(torch.from_numpy(b.data)) for name, b in self.net.blobs.items()}

    def clear_param_diffs(self) -> None:
        self.net.clear_param_diffs()

    def copy_trained_from(self, weights: str) -> None:
        self.net.copy_from(weights)

    def share_trained_layers_with(self, other: NetAdapter) -> None:
        self.net._share_trained_layers(other.net)

    def to_caffemodel(self, path: str) -> None:
        self.net.save(path)

    def to_hdf5(self, path: str) -> None:
        self.net.save_hdf5(path)

    def updated(self) -> None:
        """The solver changed the weights: a device holding copies takes them again."""
        if not on_host(current_device()):
            self.net._engine.invalidate()


def _learnable(net: Any) -> list[_Param]:
    """Caffe's ``learnable_params_``: each owned blob once, in layer order, with its lr_mult
    (0 for BatchNorm's statistics) and decay_mult (1 unless given)."""
    from .. import registry

    params: list[_Param] = []
    seen: dict[int, _Param] = {}
    for layer, blobs in zip(net._layout.layers, net._params):
        specs = layer.param.param
        statistics = registry.facts(layer.type).statistics
        for j, blob in enumerate(blobs):
            spec = specs[j] if j < len(specs) else caffe_pb2.ParamSpec()
            lr = 0.0 if statistics else float(spec.lr_mult)
            decay = float(spec.decay_mult)
            key = id(blob._buf)
            if key in seen:  # a shared blob: a sharer's explicit multipliers fill in
                owner = seen[key]
                if spec.HasField("lr_mult") and not statistics:
                    owner.lr_mult = lr
                if spec.HasField("decay_mult"):
                    owner.decay_mult = decay
                continue
            seen[key] = _Param(blob, lr, decay)
            params.append(seen[key])
    return params


def _factory(source: NetSource, device: str, input_shapes: dict, seed: int) -> NetAdapter:
    from .pycaffe import Net

    net = Net._from_param(source.param, source.state, source.path, fed=input_shapes, seed=seed)
    return NetAdapter(net)


class Solver:
    """A Caffe solver from a solver prototxt: ``net``, ``test_nets``, ``iter``, ``step(n)``,
    ``solve(resume_file=None)``, ``snapshot()``, ``restore(path)``, ``apply_update()``,
    ``add_callback(on_start, on_gradients_ready)``, ``share_weights(net)``, ``param``."""

    _type: str | None = None  # the update rule the class stands for (get_solver: the file's)

    def __init__(self, filename: str | os.PathLike[str]) -> None:
        from ..train.solver import Solver as Engine
        from ..train.solver import read_solver

        path = os.fspath(filename)
        param = read_solver(path)
        if self._type is not None:
            param.type = self._type
        self._engine = Engine(param, path=path, device="cpu", net_factory=_factory, workers=0)
        engine = self._engine
        engine.on_iteration.append(lambda _: engine.net.updated())
        # solver.net.forward() from Python takes the next batch of the solver's data streams
        engine.net.net._engine.pull = engine.feeder.next
        for adapter, feeder in zip(engine.test_nets, engine.test_feeders):
            adapter.net._engine.pull = feeder.next

    @property
    def net(self) -> Any:
        return self._engine.net.net

    @property
    def test_nets(self) -> list[Any]:
        return [adapter.net for adapter in self._engine.test_nets]

    @property
    def iter(self) -> int:
        return self._engine.iter

    @property
    def param(self) -> caffe_pb2.SolverParameter:
        return self._engine.param

    @property
    def type(self) -> str:
        return self._engine.type

    @property
    def lr(self) -> float:
        """The learning rate at the current iteration (``GetLearningRate``)."""
        rate, _ = self._engine.policy.rate(self._engine.iter, self._engine.current_step)
        return float(np.float32(rate))

    def step(self, iters: int) -> None:
        """Run ``iters`` iterations (Caffe's Step)."""
        self._engine.step(int(iters))

    def solve(self, resume_file: str | os.PathLike[str] | None = None) -> None:
        """Train to ``max_iter`` (from a snapshot when given), as Caffe's Solve."""
        self._engine.solve(os.fspath(resume_file) if resume_file else None)

    def snapshot(self) -> None:
        """Write the weights and the solver state (``<prefix>_iter_N.caffemodel`` ...)."""
        self._engine.snapshot()

    def restore(self, state_file: str | os.PathLike[str]) -> None:
        """Continue from a ``.solverstate`` (binary or HDF5, ours or real Caffe's)."""
        self._engine.restore(os.fspath(state_file))

    def apply_update(self) -> None:
        """One update from the diffs now in the parameter blobs (Caffe's ApplyUpdate)."""
        self._engine.apply_update()
        self._engine.net.updated()

    def add_callback(
        self, on_start: Callable[[], Any], on_gradients_ready: Callable[[], Any] | None = None
    ) -> None:
        """Call ``on_start`` before each iteration's passes and ``on_gradients_ready`` before
        its update; an NCCL handle (single process here) adds nothing."""
        from ._caffe import NCCL

        if isinstance(on_start, NCCL):
            return
        if on_gradients_ready is None:
            raise TypeError("add_callback(on_start, on_gradients_ready) takes two callables")
        self._engine.callbacks.append(_Callback(on_start, on_gradients_ready))

    def share_weights(self, net: Any) -> None:
        """Let ``net`` use this solver's net's weights (the same blobs)."""
        net._share_trained_layers(self.net)

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            with contextlib.suppress(Exception):  # at interpreter shutdown, nothing to stop
                engine.close()


class _Callback:
    def __init__(self, on_start: Callable[[], Any], on_ready: Callable[[], Any]) -> None:
        self.on_start = on_start
        self.on_gradients_ready = on_ready


class SGDSolver(Solver):
    _type = "SGD"


class NesterovSolver(SGDSolver):
    _type = "Nesterov"


class AdaGradSolver(SGDSolver):
    _type = "AdaGrad"


class RMSPropSolver(SGDSolver):
    _type = "RMSProp"


class AdaDeltaSolver(SGDSolver):
    _type = "AdaDelta"


class AdamSolver(SGDSolver):
    _type = "Adam"


_BY_TYPE = {
    cls._type: cls
    for cls in (
        SGDSolver,
        NesterovSolver,
        AdaGradSolver,
        RMSPropSolver,
        AdaDeltaSolver,
        AdamSolver,
    )
}


def get_solver(filename: str | os.PathLike[str]) -> Solver:
    """The solver the file's ``type`` (or legacy ``solver_type``) names."""
    from ..train.solver import read_solver

    param = read_solver(os.fspath(filename))
    kind = _BY_TYPE.get(param.type)
    if kind is None:  # read_solver checked the name; kept for a clear line regardless
        raise SolverDefinitionError(f'unknown solver type "{param.type}"', path=str(filename))
    return kind(filename)
