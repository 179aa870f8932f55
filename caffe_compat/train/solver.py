"""The solver engine: Caffe's ``Solver::Step``/``Solve``/``Test``/``Snapshot``/``Restore`` over a
``TrainNet``, with the six update rules of ``solver_rules`` and the policies of ``lr_policy``.

It is what ``caffe-compat train`` runs and what pycaffe's ``SGDSolver`` ... ``AdamSolver`` wrap.
The loop is Caffe's, step for step: clear the diffs; test every ``test_interval`` iterations
(iteration 0 too unless ``test_initialization: false``); ``iter_size`` forward/backward passes
accumulate; the loss shown is the ``average_loss`` running mean; the update; a snapshot every
``snapshot`` iterations or on request (SIGINT/SIGHUP in the CLI); and after ``max_iter`` a final
snapshot, a forward pass for the last display and a last test. The log lines are Caffe's, so
``parse_log.py``-style tools read them.

Deliberate differences, each because Caffe's behaviour cannot be reproduced or is a trap:

- Randomness (random crops and mirrors, dropout masks, shuffles) is drawn from generators keyed
  by ``random_seed``, the iteration and the record, not Caffe's global Mersenne Twister: a run is
  reproducible, though not Caffe's own draws. Without ``random_seed`` a seed is chosen at start.
- A restored run continues the data streams where the snapshot left them (Caffe's data layers
  start again from the first record), so a stopped and resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import SolverDefinitionError
from ..io import load_prototxt, load_solver
from ..io.upgrade import upgrade_net
from ..ir.phase import NetState, layer_included
from ..proto import caffe_pb2
from .data import Feeder, sources_of
from .lr_policy import LrPolicy, f32
from .solver_rules import UpdateRule, UpdateSettings, solver_type
from .solverstate import SolverState, read_solverstate, write_solverstate

log = logging.getLogger(__name__)

Action = str | None  # None, "snapshot" or "stop" (Caffe's SolverAction)


class Callback(Protocol):
    """pycaffe's solver callback: ``on_start`` before each iteration's passes, and
    ``on_gradients_ready`` after them, before the update."""

    def on_start(self) -> None: ...

    def on_gradients_ready(self) -> None: ...


@dataclass
class NetSource:
    """A net to build: its definition (upgraded to V2), its state and where it came from."""

    param: caffe_pb2.NetParameter
    state: NetState
    origin: str  # "net file: x.prototxt", "test_net_param", ...
    path: str | None


def read_solver(path: str | os.PathLike[str]) -> caffe_pb2.SolverParameter:
    """A solver file as Caffe's ``ReadSolverParamsFromTextFileOrDie`` leaves it: the legacy
    ``solver_type`` enum upgraded to ``type``, and ``snapshot_prefix`` defaulted to the solver
    file's name without extension (or a folder prefix completed with it)."""
    param = load_solver(path)
    name = solver_type(param, path=str(path))
    param.ClearField("solver_type")
    param.type = name
    target = Path(path)
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = str(target.with_suffix(""))
    elif Path(param.snapshot_prefix).is_dir():
        param.snapshot_prefix = str(Path(param.snapshot_prefix) / target.stem)
    return param


def _read_net(name: str, solver_path: str | None) -> tuple[caffe_pb2.NetParameter, str]:
    """A net file named in a solver: relative to the working folder (as Caffe opens it), else
    relative to the solver file's folder."""
    candidate = Path(name)
    if not candidate.exists() and solver_path and not candidate.is_absolute():
        beside = Path(solver_path).parent / name
        if beside.exists():
            candidate = beside
    if not candidate.exists():
        where = f" (nor beside the solver in {Path(solver_path).parent})" if solver_path else ""
        raise SolverDefinitionError(
            f'the net file "{name}" does not exist in the working folder{where}', path=solver_path
        )
    net, _ = load_prototxt(candidate)
    return net, str(candidate)


def _merged_state(phase: str, own: caffe_pb2.NetState, extra: caffe_pb2.NetState | None):
    state = caffe_pb2.NetState(phase=caffe_pb2.Phase.Value(phase))
    state.MergeFrom(own)
    if extra is not None:
        state.MergeFrom(extra)
    return NetState.make(caffe_pb2.Phase.Name(state.phase), state.stage, state.level)


def net_sources(param: caffe_pb2.SolverParameter, path: str | None) -> tuple[NetSource, list]:
    """The train net and the test nets of a solver, by ``InitTrainNet``/``InitTestNets``."""
    train_fields = [
        f for f in ("net", "net_param", "train_net", "train_net_param") if param.HasField(f)
    ]
    if len(train_fields) != 1:
        names = "net, net_param, train_net, train_net_param"
        count = "no" if not train_fields else f"{len(train_fields)} ({', '.join(train_fields)})"
        raise SolverDefinitionError(
            f"a solver names its train net in exactly one of {names}; this one has {count}",
            path=path,
        )
    field = train_fields[0]
    loaded: dict[str, tuple[caffe_pb2.NetParameter, str]] = {}

    def file_net(name: str) -> tuple[caffe_pb2.NetParameter, str]:
        if name not in loaded:
            loaded[name] = _read_net(name, path)
        net, where = loaded[name]
        copy = caffe_pb2.NetParameter()
        copy.CopyFrom(net)
        return copy, where

    def finish(net: caffe_pb2.NetParameter, where: str | None) -> caffe_pb2.NetParameter:
        upgrade_net(net, path=where)
        return net

    if field in ("net", "train_net"):
        net, where = file_net(getattr(param, field))
        origin = f"{'net' if field == 'net' else 'train_net'} file: {where}"
    else:
        net, where = caffe_pb2.NetParameter(), path
        net.CopyFrom(getattr(param, field))
        origin = field
    train = NetSource(
        finish(net, where), _merged_state("TRAIN", net.state, param.train_state), origin, where
    )

    generic = [f for f in ("net", "net_param") if param.HasField(f)]
    listed = len(param.test_net_param) + len(param.test_net)
    if generic:
        if len(param.test_iter) < listed:
            raise SolverDefinitionError(
                f"test_iter must be given for each test net ({listed}); found "
                f"{len(param.test_iter)}",
                path=path,
            )
    elif len(param.test_iter) != listed:
        raise SolverDefinitionError(
            f"test_iter must be given for each test net: {listed} test net(s), "
            f"{len(param.test_iter)} test_iter value(s)",
            path=path,
        )
    tests: list[tuple[caffe_pb2.NetParameter, str, str | None]] = []
    for test in param.test_net_param:
        copy = caffe_pb2.NetParameter()
        copy.CopyFrom(test)
        tests.append((copy, "test_net_param", path))
    for name in param.test_net:
        net, where = file_net(name)
        tests.append((net, f"test_net file: {where}", where))
    for _ in range(len(param.test_iter) - len(tests)):
        if param.HasField("net_param"):
            copy = caffe_pb2.NetParameter()
            copy.CopyFrom(param.net_param)
            tests.append((copy, "net_param", path))
        else:
            net, where = file_net(param.net)
            tests.append((net, f"net file: {where}", where))
    if param.test_state and len(param.test_state) != len(tests):
        raise SolverDefinitionError(
            f"test_state must be unspecified or given once per test net ({len(tests)})", path=path
        )
    if tests and param.test_interval <= 0:
        raise SolverDefinitionError(
            "test_interval must be > 0 when the solver has test nets", path=path
        )
    out = []
    for index, (net, origin, where) in enumerate(tests):
        extra = param.test_state[index] if param.test_state else None
        state = _merged_state("TEST", net.state, extra)
        out.append(NetSource(finish(net, where), state, origin, where))
    return train, out


def _loss_weights(net: caffe_pb2.NetParameter, state: NetState) -> dict[str, float]:
    """Each top's loss weight (``loss_weight``, or 1 on the first top of a loss layer)."""
    weights: dict[str, float] = {}
    for layer in net.layer:
        if not layer_included(state, layer):
            continue
        values = list(layer.loss_weight)
        if not values and layer.type.endswith("Loss") and layer.top:
            values = [1.0]
        for top, value in zip(layer.top, values):
            if value:
                weights[top] = f32(value)
    return weights


def _active_layers(source: NetSource) -> list[caffe_pb2.LayerParameter]:
    return [layer for layer in source.param.layer if layer_included(source.state, layer)]


def _g(value: float) -> str:
    """A number as Caffe's logs print it (C++ stream default: 6 significant digits)."""
    return f"{float(value):g}"


def default_device(param: caffe_pb2.SolverParameter) -> str:
    """``solver_mode: GPU`` (Caffe's default) uses CUDA where there is one, else the CPU."""
    if param.solver_mode == caffe_pb2.SolverParameter.GPU and torch.cuda.is_available():
        return f"cuda:{param.device_id}"
    return "cpu"


# Copies of every value a training pass keeps: the data, its diff and what autograd saves.
VALUE_COPIES = 3
# Copies of every parameter besides the solver's history: data, diff and one step's scratch.
PARAM_COPIES = 3


def training_bytes(
    source: NetSource, input_shapes: dict[str, tuple[int, ...]], history_sets: int
) -> tuple[float, str]:
    """What training ``source`` at its batch needs, before any of it is allocated: its values
    (data, diffs and autograd's saved tensors), its parameters, their diffs and the solver's
    history; and a short account of it for the error line."""
    from ..budget import footprint, format_size
    from ..ir.build import build_graph
    from ..ir.infer import infer_shapes

    graph = build_graph(
        source.param,
        state=source.state,
        input_shapes=input_shapes,
        path=source.path,
        training=True,
    )
    params = infer_shapes(graph, strict=True).params
    need = footprint(graph, params)
    first = next(iter(graph.inputs.values()), None)
    batch = first[0] if first else 1
    values = need.values(batch, VALUE_COPIES)
    weights = need.params * (PARAM_COPIES + history_sets)
    detail = (
        f"values {format_size(values)} at batch {batch} (data, diffs, saved for backward), "
        f"parameters {format_size(need.params)} x{PARAM_COPIES + history_sets} (data, diff, "
        f"scratch, {history_sets} solver history)"
    )
    return values + weights, detail


def build_train_net(
    source: NetSource, device: str, input_shapes: dict[str, tuple[int, ...]], seed: int
):
    """A ``TrainNet`` for ``source`` (the training engine, ``train/net.py``); a net from a file
    is read from its path, so errors name the file and line."""
    from .net import TrainNet

    from_file = bool(source.path) and "file:" in source.origin
    return TrainNet(
        source.path if from_file else source.param,
        phase=source.state.phase,
        stages=sorted(source.state.stages),
        level=source.state.level,
        device=device,
        input_shapes=input_shapes,
        seed=seed,
    )


class Solver:
    """Caffe's solver over ``TrainNet``: ``step(n)``, ``solve()``, ``test_all()``,
    ``snapshot()``, ``restore(path)``; ``net``, ``test_nets``, ``iter``."""

    def __init__(
        self,
        solver: caffe_pb2.SolverParameter | str | os.PathLike[str],
        *,
        device: str | None = None,
        weights: Sequence[str] = (),
        workers: int | None = None,
        net_factory: Callable[..., Any] = build_train_net,
        path: str | None = None,
        max_memory: Any = None,
    ) -> None:
        if isinstance(solver, caffe_pb2.SolverParameter):
            param = caffe_pb2.SolverParameter()
            param.CopyFrom(solver)
            name = solver_type(param, path=path)
            param.ClearField("solver_type")
            param.type = name
        else:
            path = str(solver)
            param = read_solver(solver)
        self.param = param
        self.path = path
        self.type = param.type
        self.settings = UpdateSettings.from_solver(param, path=path)
        self.policy = LrPolicy.from_solver(param, path=path)
        if param.average_loss < 1:
            raise SolverDefinitionError(
                f"average_loss must be >= 1, not {param.average_loss}", path=path
            )
        if param.snapshot < 0 or param.display < 0 or param.test_interval < 0:
            raise SolverDefinitionError(
                "snapshot, display and test_interval must be >= 0", path=path
            )
        if param.snapshot_diff:
            log.warning("snapshot_diff: snapshots hold the weights only, not their diffs")
        self.device = device or default_device(param)
        self.seed = int(param.random_seed) if param.random_seed >= 0 else secrets.randbits(62)
        self._check_snapshot_prefix()

        self.train_source, self.test_sources = net_sources(param, path)
        self.loss_weights = _loss_weights(self.train_source.param, self.train_source.state)
        self.feeder = self._feeder(self.train_source, workers)
        self.test_feeders = [self._feeder(s, workers) for s in self.test_sources]
        self._check_memory(max_memory)
        with self._rng(0, "init"):
            self.net = net_factory(self.train_source, self.device, self.feeder.shapes(), self.seed)
            self.test_nets = [
                net_factory(source, self.device, feeder.shapes(), self.seed + 1 + index)
                for index, (source, feeder) in enumerate(zip(self.test_sources, self.test_feeders))
            ]
        self.test_loss_weights = [_loss_weights(s.param, s.state) for s in self.test_sources]
        for model in [*param.weights, *weights]:
            self.load_weights(model)
        params = self.net.learnable_params
        self.rule = UpdateRule(
            self.settings, [tuple(p.data.shape) for p in params], device=self.device
        )
        self.iter = 0
        self.current_step = 0
        self.callbacks: list[Callback] = []
        self.action_request: Callable[[], Action] = lambda: None
        self.on_iteration: list[Callable[[Solver], None]] = []
        self.requested_early_exit = False
        self.smoothed_loss = np.float32(0)
        self._losses: list[np.float32] = []
        self._test_rounds = [0] * len(self.test_nets)

    # --- construction helpers ----------------------------------------------------------------

    def _feeder(self, source: NetSource, workers: int | None) -> Feeder:
        layers = _active_layers(source)
        return Feeder(
            sources_of(layers, source.state.phase, self.seed, source.path), workers=workers
        )

    def _check_memory(self, max_memory: Any) -> None:
        """The budget (caffe_compat/budget.py) covers the train net's values, diffs, parameters
        and the solver's history, and the test nets' forward passes, before anything is built."""
        from ..budget import resolve

        budget = resolve(max_memory)
        total, detail = training_bytes(
            self.train_source, self.feeder.shapes(), self.settings.history_sets
        )
        for source, feeder in zip(self.test_sources, self.test_feeders):
            total += training_bytes(source, feeder.shapes(), 0)[0] / VALUE_COPIES
        budget.require(total, f"training {self.train_source.param.name or 'the net'} ({detail})")

    def _check_snapshot_prefix(self) -> None:
        """Caffe's ``CheckSnapshotWritePermissions``: the prefix's folder must be writable."""
        if not self.param.snapshot:
            return
        if not self.param.HasField("snapshot_prefix"):
            raise SolverDefinitionError(
                "snapshot is set but snapshot_prefix is not", path=self.path
            )
        folder = Path(self.param.snapshot_prefix).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise SolverDefinitionError(
                f"cannot write snapshots with prefix '{self.param.snapshot_prefix}': make sure "
                "the folder exists and is writable",
                path=self.path,
            )

    @contextlib.contextmanager
    def _rng(self, iteration: int, what: str, net: Any = None) -> Iterator[None]:
        """Seed torch's generator for the device (and the net's own one, for DummyData) from
        (seed, iteration, what) inside a scope that restores it: dropout masks and fillers are a
        function of the iteration, whatever ran before, so a resumed run draws the same."""
        text = f"{self.seed}:{iteration}:{what}".encode()
        seed = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1
        device = torch.device(self.device)
        if device.type == "cuda":
            generator = torch.cuda.default_generators[device.index or 0]
        else:
            generator = torch.default_generator
        saved = generator.get_state()
        generator.manual_seed(seed)
        own = getattr(net, "_generator", None)
        if isinstance(own, torch.Generator):
            own.manual_seed(seed)
        try:
            yield
        finally:
            generator.set_state(saved)

    def load_weights(self, models: str) -> None:
        """Fine-tune from caffemodel(s) (comma-separated, as Caffe's ``weights``)."""
        for model in (m.strip() for m in models.split(",")):
            if model:
                log.info("Finetuning from %s", model)
                for net in (self.net, *self.test_nets):
                    net.copy_trained_from(model)

    # --- the learning rate and the update ------------------------------------------------------

    def learning_rate(self) -> float:
        """``GetLearningRate`` at the current iteration (advances ``multistep``'s step)."""
        rate, step = self.policy.rate(self.iter, self.current_step)
        if self.policy.policy == "multistep" and step != self.current_step:
            log.info("MultiStep Status: Iteration %d, step = %d", self.iter, step)
        self.current_step = step
        return rate

    def apply_update(self) -> None:
        """``ApplyUpdate``: the rate, clipping, normalisation, decay, the rule, the step."""
        rate = self.learning_rate()
        if self.param.display and self.iter % self.param.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, _g(rate))
        self.rule.apply(self.net.learnable_params, rate, self.iter)
        limit = self.settings.clip_gradients
        if limit >= 0 and self.rule.last_norm > limit:
            log.info(
                "Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s",
                _g(self.rule.last_norm),
                _g(limit),
                _g(f32(limit / self.rule.last_norm)),
            )
        self.iter += 1

    def _update_smoothed_loss(self, loss: np.float32, start_iter: int) -> None:
        average = self.param.average_loss
        if len(self._losses) < average:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = np.float32(
                (self.smoothed_loss * np.float32(size - 1) + loss) / np.float32(size)
            )
        else:
            index = (self.iter - start_iter) % average
            self.smoothed_loss = np.float32(
                self.smoothed_loss + (loss - self._losses[index]) / np.float32(average)
            )
            self._losses[index] = loss

    # --- the loop ------------------------------------------------------------------------------

    def forward_backward(self, sub: int = 0) -> np.float32:
        """One forward/backward pass of the train net on its next batch."""
        feeds = self.feeder.next()
        with self._rng(self.iter, f"train{sub}", self.net):
            return np.float32(self.net.forward_backward(feeds))

    def step(self, iters: int) -> None:
        """``Solver::Step``: ``iters`` iterations (or until a stop is requested)."""
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        self._losses = []
        self.smoothed_loss = np.float32(0)
        timer, last = time.perf_counter(), self.iter
        p = self.param
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if (
                p.test_interval
                and self.iter % p.test_interval == 0
                and (self.iter > 0 or p.test_initialization)
            ):
                self.test_all()
                if self.requested_early_exit:
                    break
            for callback in self.callbacks:
                callback.on_start()
            display = bool(p.display) and self.iter % p.display == 0
            loss = np.float32(0)
            for sub in range(self.settings.iter_size):
                loss = np.float32(loss + self.forward_backward(sub))
            loss = np.float32(loss / np.float32(self.settings.iter_size))
            self._update_smoothed_loss(loss, start_iter)
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - last) / (lapse or 1)
                log.info(
                    "Iteration %d (%s iter/s, %ss/%d iters), loss = %s",
                    self.iter,
                    _g(per_s),
                    _g(lapse),
                    p.display,
                    _g(self.smoothed_loss),
                )
                timer, last = time.perf_counter(), self.iter
                self._log_outputs("Train", self._train_outputs(), self.loss_weights)
            for callback in self.callbacks:
                callback.on_gradients_ready()
            self.apply_update()
            for hook in self.on_iteration:
                hook(self)
            request = self.action_request()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == "snapshot":
                self.snapshot()
            if request == "stop":
                self.requested_early_exit = True
                break

    def solve(self, resume_file: str | os.PathLike[str] | None = None) -> None:
        """``Solver::Solve``: train to ``max_iter`` (from a snapshot when given), snapshot, and
        show the final loss and test scores."""
        log.info("Solving %s", self.train_source.param.name)
        log.info("Learning Rate Policy: %s", self.param.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(self.param.max_iter - self.iter)
        p = self.param
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            feeds = self.feeder.next()
            with self._rng(self.iter, "final", self.net), torch.no_grad():
                self.net.forward(feeds)
            loss = np.float32(self.net.loss)
            self._update_smoothed_loss(loss, start_iter)
            log.info("Iteration %d, loss = %s", self.iter, _g(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    # --- outputs and tests ---------------------------------------------------------------------

    def _train_outputs(self) -> dict[str, torch.Tensor]:
        blobs = self.net.blobs
        return {name: blobs[name].data for name in self.net.output_names}

    def _log_outputs(
        self, kind: str, outputs: dict[str, torch.Tensor], weights: dict[str, float]
    ) -> None:
        index = 0
        for name, value in outputs.items():
            weight = weights.get(name, 0.0)
            for item in value.detach().reshape(-1).cpu().numpy().astype(np.float32):
                suffix = (
                    f" (* {_g(weight)} = {_g(np.float32(weight) * item)} loss)" if weight else ""
                )
                log.info("    %s net output #%d: %s = %s%s", kind, index, name, _g(item), suffix)
                index += 1

    def test_all(self) -> None:
        """``TestAll``: every test net, unless a stop was requested."""
        for index in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(index)

    def test(self, index: int) -> dict[str, np.ndarray] | None:
        """``Test``: ``test_iter`` forward passes of test net ``index`` with the train net's
        weights; logs and returns the mean of each output (None when interrupted)."""
        log.info("Iteration %d, Testing net (#%d)", self.iter, index)
        net = self.test_nets[index]
        net.share_trained_layers_with(self.net)
        feeder = self.test_feeders[index]
        feeder.seek(self._test_rounds[index] * self.param.test_iter[index])
        weights = self.test_loss_weights[index]
        scores: dict[str, np.ndarray] = {}
        loss = np.float32(0)
        for _ in range(self.param.test_iter[index]):
            request = self.action_request()
            while request is not None:
                if request == "snapshot":
                    self.snapshot()
                elif request == "stop":
                    self.requested_early_exit = True
                request = self.action_request()
            if self.requested_early_exit:
                break
            feeds = feeder.next()
            with self._rng(self.iter, f"test{index}", net), torch.no_grad():
                outputs = net.forward(feeds)
            if self.param.test_compute_loss:
                loss = np.float32(loss + np.float32(net.loss))
            for name, value in outputs.items():
                values = value.detach().reshape(-1).cpu().numpy().astype(np.float32)
                scores[name] = values if name not in scores else scores[name] + values
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return None
        self._test_rounds[index] += 1
        count = np.float32(self.param.test_iter[index])
        if self.param.test_compute_loss:
            log.info("Test loss: %s", _g(loss / count))
        means = {name: (total / count).astype(np.float32) for name, total in scores.items()}
        self._log_outputs("Test", {k: torch.from_numpy(v) for k, v in means.items()}, weights)
        return means

    # --- snapshots -----------------------------------------------------------------------------

    def snapshot_filename(self, extension: str) -> str:
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self) -> tuple[str, str]:
        """``Snapshot``: the weights (caffemodel, or HDF5) and the solver state beside them."""
        hdf5 = self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        if hdf5:
            model = self.snapshot_filename(".caffemodel.h5")
            log.info("Snapshotting to HDF5 file %s", model)
            self.net.to_hdf5(model)
            state = self.snapshot_filename(".solverstate.h5")
            log.info("Snapshotting solver state to HDF5 file %s", state)
        else:
            model = self.snapshot_filename(".caffemodel")
            log.info("Snapshotting to binary proto file %s", model)
            self.net.to_caffemodel(model)
            state = self.snapshot_filename(".solverstate")
            log.info("Snapshotting solver state to binary proto file %s", state)
        write_solverstate(
            state,
            iter=self.iter,
            current_step=self.current_step,
            learned_net=model,
            history=[h.detach().cpu().numpy() for h in self.rule.history],
            format="hdf5" if hdf5 else "binaryproto",
        )
        return model, state

    def restore(self, path: str | os.PathLike[str]) -> None:
        """``Restore``: iteration, policy step, weights (the state's ``learned_net``) and
        history, from a binary or HDF5 state (ours or real Caffe's)."""
        state = read_solverstate(path)
        self._restore(state)

    def _restore(self, state: SolverState) -> None:
        weights = state.learned_net_path()
        if weights is not None:
            self.net.copy_trained_from(str(weights))
        log.info("SGDSolver: restoring history")
        self.rule.set_history(state.history, path=state.path)
        self.iter = state.iter
        self.current_step = state.current_step
        # The data streams continue where the run stopped (see the module docstring).
        self.feeder.seek(self.iter * self.settings.iter_size)
        p = self.param
        for index in range(len(self.test_nets)):
            self._test_rounds[index] = sum(
                1
                for i in range(0, self.iter, p.test_interval or max(self.iter, 1))
                if p.test_interval and (i > 0 or p.test_initialization)
            )

    def close(self) -> None:
        """Stop the data workers."""
        for feeder in (self.feeder, *self.test_feeders):
            feeder.close()


__all__ = ["Callback", "NetSource", "Solver", "net_sources", "read_solver"]
