"""``caffe-compat train``: Caffe's log layout, snapshots Caffe can load, resuming, signals, and
bad input as one line with exit code 2."""

from __future__ import annotations

import re
import signal

import pytest
from _caffe_runs import RUNS, load_run

from caffe_compat.cli import train as train_cli
from caffe_compat.cli.main import main
from caffe_compat.io import read_caffemodel
from caffe_compat.train.solverstate import read_solverstate

GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")


@pytest.fixture
def solver_file(tmp_path):
    """The recorded sgd_step case: a tiny conv net on HDF5 data, 20 iterations."""
    import h5py

    run = load_run("sgd_step")
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle["data"], handle["label"] = run.arrays["data"], run.arrays["label"]
    (tmp_path / "data.txt").write_text(f"{tmp_path / 'data.h5'}\n")
    net = (RUNS / "sgd_step.net.prototxt").read_text()
    (tmp_path / "net.prototxt").write_text(net.replace('"data.txt"', f'"{tmp_path / "data.txt"}"'))
    text = (RUNS / "sgd_step.solver.prototxt").read_text()
    text = text.replace('snapshot_prefix: "snap"', f'snapshot_prefix: "{tmp_path / "snap"}"')
    text = text.replace("display: 0", "display: 5") + "snapshot: 8\n"
    path = tmp_path / "solver.prototxt"
    path.write_text(text)  # net: "net.prototxt" is found beside the solver
    return path


def test_trains_with_caffes_log_and_snapshots(solver_file, capsys):
    assert main(["train", "--solver", str(solver_file), "--workers", "0"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err and all(GLOG.match(line) for line in err), err[:3]
    messages = [GLOG.sub("", line) for line in err]
    assert "Solving tiny" in messages and messages[-1] == "Optimization Done."
    assert any(
        re.fullmatch(r"Iteration 15 \(\S+ iter/s, \S+s/5 iters\), loss = \S+", m) for m in messages
    )
    assert "Iteration 15, lr = 0.0125" in messages  # step policy: 0.05 * 0.5^2
    folder = solver_file.parent
    for it in (8, 16, 20):  # every 8, and after the last iteration
        state = read_solverstate(folder / f"snap_iter_{it}.solverstate")
        assert state.iter == it and state.learned_net == str(folder / f"snap_iter_{it}.caffemodel")
        assert state.current_step == (it - 1) // 6  # the step policy at the last update
        read_caffemodel(folder / f"snap_iter_{it}.caffemodel")


def test_resume_from_a_snapshot_continues(solver_file, capsys):
    folder = solver_file.parent
    assert main(["train", "--solver", str(solver_file), "--workers", "0"]) == 0
    first = read_caffemodel(folder / "snap_iter_20.caffemodel")
    (folder / "snap_iter_20.caffemodel").rename(folder / "first.caffemodel")
    capsys.readouterr()
    state = folder / "snap_iter_8.solverstate"
    assert main(["train", "--solver", str(solver_file), "--snapshot", str(state), "-q"]) == 0
    again = read_caffemodel(folder / "snap_iter_20.caffemodel")
    for layer, blobs in first.blobs.items():
        for a, b in zip(blobs, again.blobs[layer]):
            assert (a == b).all(), layer


def test_signals_are_flags_the_solver_reads():
    handler = train_cli._Signals("stop", "snapshot")
    with handler:
        assert signal.getsignal(signal.SIGINT) == handler._handle
        assert handler.request() is None
        handler._handle(signal.SIGHUP, None)
        assert handler.request() == "snapshot" and handler.request() is None
        handler._handle(signal.SIGINT, None)
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C before the first was served
            handler._handle(signal.SIGINT, None)
        assert handler.request() == "stop"
    assert signal.getsignal(signal.SIGINT) is not handler._handle
    none = train_cli._Signals("none", "none")
    none._handle(signal.SIGINT, None)
    assert none.request() is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--solver", "/nonexistent/solver.prototxt"], "no such file"),
        (["--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
        (["--weights", "/nonexistent/w.caffemodel"], "w.caffemodel"),
        (["--snapshot", "/nonexistent/s.solverstate"], "s.solverstate"),
    ],
)
def test_bad_input_is_one_line(solver_file, capsys, args, message):
    argv = ["train", "--solver", str(solver_file), "--workers", "0", *args]
    if args[0] == "--solver":
        argv = ["train", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("caffe-compat: error:")]
    assert len(errors) == 1 and message in errors[0], err[-3:]
    assert "Traceback" not in "\n".join(err)


def test_weights_and_snapshot_exclude_each_other(solver_file, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--solver", str(solver_file), "--weights", "a", "--snapshot", "b"])
    assert info.value.code == 2


def test_a_net_without_data_layers_is_one_line(solver_file, capsys):
    net = solver_file.parent / "net.prototxt"
    text = net.read_text()
    start = text.index("layer {")
    end = text.index("layer {", start + 1)
    net.write_text(
        'layer { name: "in" type: "Input" top: "data" top: "label" input_param { '
        "shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }\n" + text[end:]
    )
    assert main(["train", "--solver", str(solver_file), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "input(s) data, label have no data layer" in err and "Traceback" not in err


def test_progress_with_eta_on_a_terminal(solver_file, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr("caffe_compat.progress.Progress._maybe_draw", _draw_always)
    assert main(["train", "--solver", str(solver_file), "--workers", "0"]) == 0
    text = terminal.getvalue()
    assert "train:" in text and "ETA" in text and "iteration 20, loss" in text


def _draw_always(self, force: bool = False) -> None:  # no throttling in the test
    if self.enabled:
        self.stream.write("\r" + self.text() + "\n")
