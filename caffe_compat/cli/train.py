"""Train or fine-tune a net from a Caffe solver definition, as ``caffe train`` does: the same
solvers and learning-rate policies, the same log lines on stderr (glog's format, so
``parse_log.py`` and other Caffe log tools read them), snapshots as caffemodel + solverstate that
Caffe also loads. Ctrl-C (SIGINT) snapshots and stops, SIGHUP snapshots and goes on (Caffe's
``--sigint_effect``/``--sighup_effect``); a second Ctrl-C stops at once without a snapshot."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator

from .. import progress
from ..errors import CaffeCompatError
from ._common import add_memory_argument

NAME = "train"
HELP = "train or fine-tune from a solver prototxt, as `caffe train` (Caffe's solvers and logs)"
ORDER = 45
EFFECTS = ("stop", "snapshot", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--solver", required=True, help="solver definition (.prototxt)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--weights", help="caffemodel(s) to fine-tune from (comma-separated, as Caffe's)"
    )
    start.add_argument("--snapshot", help="a .solverstate (or .solverstate.h5) to resume from")
    parser.add_argument(
        "--device", help="cpu, cuda or cuda:N (default: the solver's solver_mode, CPU without CUDA)"
    )
    parser.add_argument("--stage", action="append", default=[], help="train net stage (repeatable)")
    parser.add_argument("--level", type=int, default=0, help="train net level (default 0)")
    parser.add_argument(
        "--workers", type=int, help="data decoding processes (default: one per spare core, <= 4)"
    )
    add_memory_argument(parser)
    parser.add_argument(
        "--sigint-effect", choices=EFFECTS, default="stop", help="on Ctrl-C (default stop)"
    )
    parser.add_argument(
        "--sighup-effect", choices=EFFECTS, default="snapshot", help="on SIGHUP (default snapshot)"
    )


class _GlogFormatter(logging.Formatter):
    """``I0512 13:39:22.381027 25210 solver.py:204] message``: glog's line layout."""

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname[:1] if record.levelno >= logging.WARNING else "I"
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(record.created))
        micros = int((record.created % 1) * 1e6)
        return (
            f"{level}{stamp}.{micros:06d} {record.process:5d} {record.filename}:{record.lineno}] "
            f"{record.getMessage()}"
        )


class _LogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            progress.clear_active()
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _training_log(quiet: bool) -> Iterator[None]:
    """The training log (INFO lines, glog layout) on stderr for this command only."""
    logger = logging.getLogger("caffe_compat.train")
    handler = _LogHandler(logging.WARNING if quiet else logging.INFO)
    handler.setFormatter(_GlogFormatter())
    previous, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        logger.propagate = propagate


class _Signals:
    """Caffe's SignalHandler: a signal only sets a flag; the solver asks between iterations."""

    def __init__(self, sigint: str, sighup: str) -> None:
        self.effects = {signal.SIGINT: sigint, getattr(signal, "SIGHUP", None): sighup}
        self.pending: list[int] = []
        self._previous: dict[int, object] = {}

    def _handle(self, number: int, frame: object) -> None:
        if number == signal.SIGINT and signal.SIGINT in self.pending:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.pending.append(number)

    def request(self) -> str | None:
        """The effect of the oldest pending signal (SIGHUP first, as Caffe checks it first)."""
        for number in (getattr(signal, "SIGHUP", None), signal.SIGINT):
            if number in self.pending:
                self.pending.remove(number)
                effect = self.effects[number]
                return None if effect == "none" else effect
        return None

    def __enter__(self) -> _Signals:
        for number in self.effects:
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    from ..train.solver import Solver, read_solver

    if args.workers is not None and args.workers < 0:
        raise CaffeCompatError("--workers must be >= 0")
    param = read_solver(args.solver)
    if args.stage or args.level:
        param.train_state.level = args.level
        param.train_state.stage.extend(args.stage)
    if args.snapshot or args.weights:
        param.ClearField("weights")  # as caffe train: the flag replaces the solver's weights
    with _training_log(args.quiet):
        solver = Solver(
            param,
            path=args.solver,
            device=_device(args.device),
            weights=[args.weights] if args.weights else [],
            workers=args.workers,
            max_memory=args.max_memory,
        )
        fed = solver.feeder.shapes()
        unfed = [name for name in solver.net.input_names if name not in fed]
        if unfed:
            solver.close()
            raise CaffeCompatError(
                f"the train net's input(s) {', '.join(unfed)} have no data layer to fill them: "
                "train reads Data (LMDB/LevelDB), ImageData and HDF5Data layers (DummyData "
                "fills itself; Input and MemoryData are for pycaffe, which sets them)",
                path=solver.train_source.path,
            )
        log = logging.getLogger("caffe_compat.train")
        log.info("Use %s.", "CPU" if solver.device == "cpu" else f"GPU {solver.device}")
        try:
            if args.snapshot:
                log.info("Resuming from %s", args.snapshot)
                solver.restore(args.snapshot)
            start = solver.iter
            with (
                _Signals(args.sigint_effect, args.sighup_effect) as signals,
                progress.Progress(max(int(param.max_iter) - start, 0), label="train") as bar,
            ):
                solver.action_request = signals.request
                solver.on_iteration.append(
                    lambda s: (
                        bar.set(s.iter - start),
                        bar.describe(f"iteration {s.iter}, loss {float(s.smoothed_loss):.4g}"),
                    )
                )
                log.info("Starting Optimization")
                solver.solve()
        finally:
            solver.close()
        log.info("Optimization Done.")
    return 0


def _device(name: str | None) -> str | None:
    if name is None:
        return None
    if name == "cpu" or name.startswith("cuda"):
        import torch

        if name.startswith("cuda") and not torch.cuda.is_available():
            raise CaffeCompatError(f"--device {name}: no CUDA device is available here")
        return name
    raise CaffeCompatError(f"--device must be cpu, cuda or cuda:N, not {name!r}")
