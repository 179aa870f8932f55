"""The solver engine on whole nets: real Caffe's recorded runs replayed end to end (TrainNet's
gradients and the engine's loop together), snapshots and restores, the test phase, the log."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _caffe_runs import CASES, RUNS, load_run, relative_error

from caffe_compat.errors import CaffeCompatError
from caffe_compat.proto import caffe_pb2
from caffe_compat.train.solver import Solver, read_solver
from caffe_compat.train.solverstate import read_solverstate

TOLERANCE = 1e-4  # of each blob's largest value, over 20 iterations
# Whole-net replays in the fast tier; the other recorded cases run with the train tier (the
# update rules of every case are replayed in the fast tier by test_solver_rules.py).
FAST = {"sgd_step", "sgd_multistep", "adam", "adam_frozen_l1", "clip_iter_size2", "bn_adadelta"}


def materialise(run, folder: Path, rows: int | None = None) -> Path:
    """Write a recorded run's data, net and solver into ``folder``; return the solver path."""
    data, label = run.arrays["data"], run.arrays["label"]
    with h5py.File(folder / "data.h5", "w") as handle:
        handle["data"] = data[:rows]
        handle["label"] = label[:rows]
    (folder / "data.txt").write_text(f"{folder / 'data.h5'}\n")
    net = (RUNS / f"{run.name}.net.prototxt").read_text()
    (folder / "net.prototxt").write_text(net.replace('"data.txt"', f'"{folder / "data.txt"}"'))
    solver = (RUNS / f"{run.name}.solver.prototxt").read_text()
    solver = solver.replace('"net.prototxt"', f'"{folder / "net.prototxt"}"')
    solver = solver.replace('snapshot_prefix: "snap"', f'snapshot_prefix: "{folder / "snap"}"')
    (folder / "solver.prototxt").write_text(solver)
    return folder / "solver.prototxt"


class Recorder:
    """Weights and diffs at each ``on_gradients_ready``, as record.py took Caffe's."""

    def __init__(self, solver: Solver) -> None:
        self.solver = solver
        self.w: list[list[np.ndarray]] = []
        self.g: list[list[np.ndarray]] = []

    def on_start(self) -> None:
        pass

    def on_gradients_ready(self) -> None:
        params = self.solver.net.learnable_params
        self.w.append([p.data.cpu().numpy().copy() for p in params])
        self.g.append([p.diff.cpu().numpy().copy() for p in params])


def start_from_caffe(solver: Solver, run) -> None:
    """Caffe's initial weights; BatchNorm's statistics start at zero as Caffe fills them (the
    recorded values are after the first forward pass)."""
    params = solver.net.learnable_params
    assert [f"{p.owner[0]}:{p.owner[1]}" for p in params] == run.names
    for k, p in enumerate(params):
        start = run.weights(k)[0]
        p.data = torch.from_numpy(np.zeros_like(start) if run.statistics[k] else start)


def gradient_error(ours: np.ndarray, theirs: np.ndarray, floor: float) -> float:
    """Like relative_error, but blobs whose true gradient is rounding noise (a bias feeding
    BatchNorm, whose mean subtraction cancels it) are judged against the net's largest
    gradient at that iteration (``floor``), not against their own noise."""
    scale = max(float(np.max(np.abs(theirs))), floor)
    return float(np.max(np.abs(ours.astype(np.float64) - theirs))) / scale


@pytest.mark.parametrize(
    "name",
    [
        c if c in FAST else pytest.param(c, marks=pytest.mark.train)
        for c in CASES
        if not c.startswith("restore")
    ],
)
def test_whole_net_follows_caffe(tmp_path, name):
    """From Caffe's initial weights on Caffe's data: every iteration's gradients and weights
    (BatchNorm statistics included) within 1e-4 of the largest value of each blob."""
    run = load_run(name)
    solver = Solver(materialise(run, tmp_path), workers=0)
    start_from_caffe(solver, run)
    recorder = Recorder(solver)
    solver.callbacks.append(recorder)
    solver.step(run.steps)
    final = [p.data.cpu().numpy() for p in solver.net.learnable_params]
    worst_w = worst_g = 0.0
    for t in range(run.steps):
        floor = 1e-2 * max(float(np.max(np.abs(run.grads(k)[t]))) for k in range(len(run.names)))
        for k in range(len(run.names)):
            worst_w = max(worst_w, relative_error(recorder.w[t][k], run.weights(k)[t]))
            worst_g = max(worst_g, gradient_error(recorder.g[t][k], run.grads(k)[t], floor))
    for k in range(len(run.names)):
        worst_w = max(worst_w, relative_error(final[k], run.weights(k)[-1]))
    assert worst_w <= TOLERANCE, f"{name}: weights off by {worst_w:.2e} of max"
    assert worst_g <= TOLERANCE, f"{name}: gradients off by {worst_g:.2e} of max"
    history = run.history()
    for j, (ours, theirs) in enumerate(zip(solver.rule.history, history)):
        error = relative_error(ours.numpy().reshape(theirs.shape), theirs)
        assert error <= TOLERANCE, f"{name}: history {j} off by {error:.2e}"


@pytest.mark.parametrize("name", ["restore_binary", "restore_hdf5"])
def test_restores_states_caffe_wrote(tmp_path, name):
    """Caffe's own snapshot at iteration 10 (weights + binary or HDF5 state) restored here, then
    10 iterations: Caffe's weights at 20 (its data is one batch, so where the stream resumes
    does not matter)."""
    run = load_run(name)
    solver = Solver(materialise(run, tmp_path, rows=4), workers=0)
    state = next((RUNS / name).glob("snap_iter_10.solverstate*"))
    solver.restore(state)
    assert solver.iter == 10
    for k, p in enumerate(solver.net.learnable_params):
        if not run.statistics[k]:  # (the recorded statistics are after the next forward)
            assert relative_error(p.data.cpu().numpy(), run.weights(k)[10]) == 0.0
    solver.step(10)
    for k, p in enumerate(solver.net.learnable_params):
        error = relative_error(p.data.cpu().numpy(), run.weights(k)[-1])
        assert error <= TOLERANCE, f"{name}: {run.names[k]} off by {error:.2e}"


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_snapshot_then_restore_equals_an_uninterrupted_run(tmp_path, fmt):
    run = load_run("bn_adam")
    path = materialise(run, tmp_path)
    text = path.read_text() + f"snapshot_format: {fmt}\nsnapshot: 7\n"
    path.write_text(text)
    straight = Solver(path, workers=0)
    straight.step(14)
    first = Solver(path, workers=0)
    first.step(7)  # writes snap_iter_7.*
    ext = ".solverstate.h5" if fmt == "HDF5" else ".solverstate"
    state = read_solverstate(tmp_path / f"snap_iter_7{ext}")
    assert state.iter == 7 and len(state.history) == 2 * len(first.net.learnable_params)
    resumed = Solver(path, workers=0)
    resumed.restore(tmp_path / f"snap_iter_7{ext}")
    resumed.step(7)
    for a, b in zip(straight.net.learnable_params, resumed.net.learnable_params):
        assert torch.equal(a.data, b.data), a.owner


def test_log_lines_are_caffes(tmp_path, caplog):
    """The lines parse_log.py reads: iterations with loss, lr, train and test outputs; the
    smoothed loss is Caffe's running mean over average_loss iterations."""
    run = load_run("sgd_step")
    path = materialise(run, tmp_path)
    path.write_text(
        path.read_text().replace("display: 0", "display: 1")
        + "average_loss: 3\ntest_iter: 2\ntest_interval: 5\n"
    )
    solver = Solver(path, workers=0)
    losses = []
    solver.callbacks.append(
        type(
            "L",
            (),
            {
                "on_start": lambda s: None,
                "on_gradients_ready": lambda s: losses.append(float(solver.net.loss)),
            },
        )()
    )
    with caplog.at_level(logging.INFO, logger="caffe_compat.train"):
        solver.solve()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "Solving tiny" and lines[1] == "Learning Rate Policy: step"
    shown = [
        float(m.group(2))
        for m in (
            re.match(r"Iteration (\d+) \(.* iter/s, .*s/1 iters\), loss = (\S+)", x) for x in lines
        )
        if m
    ]
    assert len(shown) == 20
    for t, value in enumerate(shown):
        window = losses[max(0, t - 2) : t + 1]
        assert value == pytest.approx(np.mean(window), rel=1e-5)
    rates = [
        float(m.group(1)) for m in (re.match(r"Iteration \d+, lr = (\S+)$", x) for x in lines) if m
    ]
    np.testing.assert_allclose(rates, run.arrays["lr"], rtol=1e-5)
    tests = [x for x in lines if x.startswith("Iteration") and "Testing net (#0)" in x]
    assert [int(x.split()[1].rstrip(",")) for x in tests] == [0, 5, 10, 15, 20]
    assert any(
        re.fullmatch(r"    Test net output #0: loss = \S+ \(\* 1 = \S+ loss\)", x) for x in lines
    )
    assert any(
        re.fullmatch(r"    Train net output #0: loss = \S+ \(\* 1 = \S+ loss\)", x) for x in lines
    )
    assert lines[-1] == "Optimization Done."
    assert "Snapshotting to binary proto file" in " ".join(lines)  # snapshot_after_train


def test_stop_request_snapshots_and_stops(tmp_path):
    run = load_run("sgd_fixed")
    solver = Solver(materialise(run, tmp_path), workers=0)
    requests = iter([None, None, "snapshot", None, "stop"])
    solver.action_request = lambda: next(requests, None)
    solver.solve()
    assert solver.iter == 5 and solver.requested_early_exit
    assert (tmp_path / "snap_iter_3.solverstate").exists()  # the SIGHUP-style snapshot
    assert (tmp_path / "snap_iter_5.solverstate").exists()  # Solve's snapshot after the stop


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('type: "Adadelta"\n', 'unknown solver type "Adadelta"'),
        ('type: "AdaGrad"\n', "momentum must be 0 for AdaGrad"),
        ('solver_type: ADAM\ntype: "Adam"\n', "solver_type .* are both set"),
        ("test_iter: 3\n", "test_interval must be > 0"),
        ('train_net: "other.prototxt"\n', "exactly one of net, net_param, train_net"),
        ("average_loss: 0\n", "average_loss must be >= 1"),
        ('regularization_type: "L3"\n', 'unknown regularization_type "L3"'),
    ],
)
def test_bad_solvers_are_one_line(tmp_path, extra, message):
    path = materialise(load_run("sgd_fixed"), tmp_path)
    path.write_text(path.read_text() + extra)
    with pytest.raises(CaffeCompatError, match=message) as info:
        Solver(path, workers=0)
    assert "\n" not in str(info.value) and "solver.prototxt" in str(info.value)


def test_solver_file_upgrades(tmp_path):
    """Caffe's ReadSolverParamsFromTextFileOrDie: the legacy enum becomes ``type``, and a missing
    snapshot_prefix becomes the solver's own path without its extension."""
    path = tmp_path / "my_solver.prototxt"
    path.write_text('net: "x.prototxt"\nsolver_type: NESTEROV\nbase_lr: 0.1\nlr_policy: "fixed"\n')
    param = read_solver(path)
    assert param.type == "Nesterov" and not param.HasField("solver_type")
    assert param.snapshot_prefix == str(tmp_path / "my_solver")
    (tmp_path / "snaps").mkdir()
    path.write_text(path.read_text() + f'snapshot_prefix: "{tmp_path / "snaps"}"\n')
    assert read_solver(path).snapshot_prefix == str(tmp_path / "snaps" / "my_solver")


def test_net_file_found_beside_the_solver(tmp_path, monkeypatch):
    run = load_run("sgd_fixed")
    path = materialise(run, tmp_path)
    path.write_text(path.read_text().replace(f'"{tmp_path / "net.prototxt"}"', '"net.prototxt"'))
    monkeypatch.chdir("/")
    solver = Solver(path, workers=0)
    assert solver.train_source.path == str(tmp_path / "net.prototxt")
    assert caffe_pb2.Phase.Name(caffe_pb2.TRAIN) == solver.train_source.state.phase


def _events(lines: list[str]) -> list[tuple[str, str, float]]:
    """The facts of a training log, in order: (kind, name, value)."""
    patterns = [
        ("test", re.compile(r"Iteration (\d+), Testing net \(#0\)")),
        ("loss", re.compile(r"Iteration (\d+) \(.*\), loss = (\S+)")),
        ("lr", re.compile(r"Iteration (\d+), lr = (\S+)")),
        ("train", re.compile(r"Train net output #\d+: (\S+) = (\S+)")),
        ("score", re.compile(r"Test net output #\d+: (\S+) = (\S+)")),
        ("snapshot", re.compile(r"Snapshotting to binary proto file \S*?(_iter_\d+)")),
        ("final", re.compile(r"Iteration (\d+), loss = (\S+)")),
        ("done", re.compile(r"(Optimization Done)\.")),
    ]
    events = []
    for line in lines:
        for kind, pattern in patterns:
            match = pattern.search(line)
            if match:
                groups = match.groups()
                value = float(groups[1]) if len(groups) > 1 else 0.0
                events.append((kind, groups[0], value))
                break
    return events


def test_training_log_matches_caffe_train(tmp_path, caplog):
    """``caffe train --weights`` on a net with a test phase (display 1, average_loss 3, tests
    every 5 iterations, a snapshot at 10, step policy): every loss, rate, train output, test
    score and snapshot of real Caffe's log, in the same order, within 1e-4."""
    caffe_log = RUNS / "log.caffe.txt"
    if not caffe_log.exists():
        pytest.skip("no recorded caffe train log")
    with np.load(RUNS / "log.data.npz") as handle:
        data, label = handle["data"], handle["label"]
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle["data"], handle["label"] = data, label
    (tmp_path / "data.txt").write_text(f"{tmp_path / 'data.h5'}\n")
    net = (RUNS / "log.net.prototxt").read_text()
    (tmp_path / "net.prototxt").write_text(net.replace('"data.txt"', f'"{tmp_path / "data.txt"}"'))
    solver = (RUNS / "log.solver.prototxt").read_text()
    solver = solver.replace('"net.prototxt"', f'"{tmp_path / "net.prototxt"}"')
    solver = solver.replace('snapshot_prefix: "snap"', f'snapshot_prefix: "{tmp_path / "snap"}"')
    (tmp_path / "solver.prototxt").write_text(solver)
    engine = Solver(
        tmp_path / "solver.prototxt", weights=[str(RUNS / "log.init.caffemodel")], workers=0
    )
    with caplog.at_level(logging.INFO, logger="caffe_compat.train"):
        engine.solve()
    ours = _events([r.getMessage() for r in caplog.records])
    theirs = _events(caffe_log.read_text().splitlines())
    assert theirs[-2:] == [("done", "Optimization Done", 0.0)] * 2
    theirs = theirs[:-1]  # the second is caffe.cpp's own, after Solve (the CLI's here)
    assert [(k, n) for k, n, _ in ours] == [(k, n) for k, n, _ in theirs]
    for (kind, name, a), (_, _, b) in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), (kind, name)


def test_memory_budget_is_checked_before_building(tmp_path):
    """The budget covers values, diffs, parameters and the solver's history: refused in one
    line naming the option, before any net is built."""
    from caffe_compat.errors import MemoryBudgetError

    path = materialise(load_run("adam"), tmp_path)
    with pytest.raises(MemoryBudgetError, match=r"training tiny \(values .* 2 solver history\)"):
        Solver(path, workers=0, max_memory="10K")
    Solver(path, workers=0, max_memory="64M")  # fits
