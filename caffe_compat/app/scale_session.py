"""The Ray session of a large run: joined or started here, sized, and left as it was found.

A session started here is stopped when the run ends however it ends: normally, by an exception,
or by SIGTERM (turned into ``SystemExit(143)`` for the session's lifetime, so the same cleanup
runs); every process it started is stopped after ``ray.shutdown``, and by a watcher process if
the driver is killed outright (``scale_processes``). A session that cannot start (Ray's "node
timed out during startup", typically a memory limit too small for its processes) is one line
saying so, not an internal error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..budget import format_size
from ..errors import CaffeCompatError
from ..printable import printable
from .images import opencv_pixel_limit_env
from .scale_processes import Processes, Watcher, descendants, stop

DEFAULT_BLOCK = 64
DEVICES = ("auto", "cpu", "cuda")
RAY_MISSING = (
    "the ray engine needs Ray Data and pyarrow, which are not installed: "
    "pip install 'caffe-compat[ray]'"
)


def require_ray() -> Any:
    """The ``ray`` module with Ray Data and pyarrow, or one line saying how to install them."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError:
        raise CaffeCompatError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the engine runs (what it computes is ``AppSettings``): ``address``
    of a running cluster (None: start Ray here), inference ``workers`` (None: one per GPU, else
    per CPU), ``device`` (``auto``: GPUs where the cluster has them, ``cpu`` or ``cuda``),
    ``block`` (photos per inference call and shard)."""

    address: str | None = None
    workers: int | None = None
    device: str = "auto"
    block: int = DEFAULT_BLOCK

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise CaffeCompatError(
                f"device must be one of {', '.join(DEVICES)}, not {self.device!r}"
            )
        for name in ("workers", "block"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise CaffeCompatError(f"{name} must be at least 1, got {value}")


# --------------------------------------------------------------------------------------------
# Resources


class Placement(NamedTuple):
    workers: int
    gpu: bool
    actor_cpus: float


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _task_slots(workers: int) -> int:
    """Logical CPUs for the decode/detect tasks beside ``workers`` one-core CPU actors in local
    mode: as many again. Detection costs 0.4 to 0.7 of the nets' time per photo depending on the
    photo and crop mode (benchmarks/bench_scale.py), so fewer slots can starve the actors; the
    extra logical CPUs share the same cores, and the OS gives the cores to whichever side has
    work."""
    return max(1, workers)


def placement(
    ray: Any, workers: int | None, threads: int, device: str, sized: int | None = None
) -> Placement:
    """Actors and their resources: ``workers`` if given; else one per GPU, else ``sized`` (what
    a local session was started for), else half the CPUs (the other half for the CPU tasks)."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if device == "cuda" and gpus == 0:
        raise CaffeCompatError("device cuda: the Ray cluster has no GPU")
    if gpus and device != "cpu":
        count = workers or gpus
        if count + 1 > cpus:
            raise CaffeCompatError(
                f"{count} GPU workers need {count + 1} CPUs (one each, one for decoding); the "
                f"Ray cluster has {cpus}"
            )
        return Placement(count, True, 1.0)
    count = workers or sized or max(1, cpus // 2 // threads)
    if count * threads + 1 > cpus:
        raise CaffeCompatError(
            f"{count} workers of {threads} thread(s) need {count * threads + 1} CPUs (one more "
            f"for decoding and detection); the Ray cluster has {cpus}"
        )
    return Placement(count, False, float(threads))


# --------------------------------------------------------------------------------------------
# The session


@contextlib.contextmanager
def _sigterm_exits(previous: Any) -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` while the session is up (main thread only), so the
    cleanup runs; ``previous`` (the handler before Ray started) is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _address_space_limit() -> str:
    try:
        import resource
    except ImportError:  # not POSIX
        return ""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return ""
    return f"; this process may map at most {format_size(soft)} (ulimit -v)"


def _start(ray: Any, address: str | None, **init: Any) -> None:
    """``ray.init``, with a failure to start worded as one (typically too little memory)."""
    try:
        ray.init(address=address, **init) if address else ray.init(**init)
    except Exception as exc:  # Ray raises plain Exception for a node that never came up
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = printable(lines[0] if lines else type(exc).__name__).rstrip(".")
        where = f"join the Ray cluster at {printable(address)}" if address else "start Ray here"
        raise CaffeCompatError(f"could not {where}: {reason}{_address_space_limit()}") from None


@contextlib.contextmanager
def session(ray: Any, options: RayOptions, threads: int, max_pixels: int) -> Iterator[int | None]:
    """Join ``options.address``, or start Ray here (logical CPUs: the workers' threads plus
    slots for the CPU tasks); leave a session the caller started as it is. A session started
    here gives its workers OpenCV's own pixel limit, the backstop for headers ``image_size``
    cannot read (a job-wide environment: per-task ones would start fresh worker processes on
    every run). Yields the number of CPU workers a local session was sized for (None
    otherwise)."""
    if ray.is_initialized():
        yield options.workers
        return
    common = {
        "include_dashboard": False,
        "log_to_driver": False,
        # errors only: a local start otherwise warns about Ray's own token authentication,
        # and a failed start would be that plus our one line
        "logging_level": logging.ERROR,
        "runtime_env": {"env_vars": opencv_pixel_limit_env(max_pixels)},
    }
    count = options.workers
    if not options.address:
        count = options.workers or _cpu_count()
        common["num_cpus"] = count * threads + _task_slots(count)
    previous = signal.getsignal(signal.SIGTERM)
    started: Processes = {}
    with _noting_started(started, own=not options.address) as note:
        try:
            try:
                _start(ray, options.address, **common)
            finally:
                note()  # a node that failed to start may have left some running
            with _sigterm_exits(previous):
                yield count
        finally:
            note()
            with contextlib.suppress(Exception):  # after a failed start too
                ray.shutdown()


@contextlib.contextmanager
def _noting_started(started: Processes, own: bool) -> Iterator[Any]:
    """Yields ``note()``, which adds the processes started since entering to ``started`` and
    tells the watcher; on exit, those still running are stopped. ``own`` False (a cluster
    joined by address keeps its processes): nothing is noted."""
    if not own:
        yield lambda: None
        return
    before = descendants(os.getpid())
    watcher = Watcher()

    def note() -> None:
        now = descendants(os.getpid())
        new = {p: t for p, t in now.items() if before.get(p) != t and p != watcher.pid}
        watcher.note({p: t for p, t in new.items() if started.get(p) != t})
        started.update(new)

    try:
        yield note
    finally:
        stop(started)
        watcher.close()


@contextlib.contextmanager
def quiet_ray_data(ray: Any) -> Iterator[None]:
    """No Ray Data progress bars or log lines for this run (the caller gets ``on_progress``)."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars
    logger = logging.getLogger("ray.data")
    level = logger.level
    context.enable_progress_bars = False
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars = saved
        logger.setLevel(level)
