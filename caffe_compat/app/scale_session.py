"""The Ray session of a large run: joined or started here, sized, and left as it was found.

A session started here is stopped when the run ends however it ends: normally, by an exception,
or by SIGTERM (turned into ``SystemExit(143)`` for the session's lifetime, so the same cleanup
runs). ``ray.shutdown`` stops the processes Ray tracks, but not every helper it started (the
dashboard and runtime-env agents can outlive it), so the processes the session started are
noted once it is up and any still running after the shutdown are stopped (SIGTERM, then
SIGKILL). A session that cannot start (Ray's "node timed out during startup", typically a
memory limit too small for its processes) is one line saying so, not an internal error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..budget import format_size
from ..errors import CaffeCompatError
from ..printable import printable
from .images import opencv_pixel_limit_env

DEFAULT_BLOCK = 64
DEVICES = ("auto", "cpu", "cuda")
RAY_MISSING = (
    "the ray engine needs Ray Data and pyarrow, which are not installed: "
    "pip install 'caffe-compat[ray]'"
)
STOP_GRACE_S = 2.0  # between SIGTERM and SIGKILL of a process the session left running


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
# The processes a session started


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (with the pid, a process's identity), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()[19].decode()


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (children, their children...) with its start time; empty
    where ``/proc`` is not there to ask."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            started = _start_time(child)
            if started is not None and child not in found:
                found[child] = started
                stack.append(child)
    return found


def _alive(processes: dict[int, str]) -> list[int]:
    """The pids in ``processes`` still running as the same process (not reused, not zombies)."""
    alive = []
    for pid, started in processes.items():
        if _start_time(pid) != started:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z":
            alive.append(pid)
    return alive


def stop_processes(processes: dict[int, str], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM to each process of ``processes`` still running, SIGKILL to any still there after
    ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _alive(processes):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _alive(processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(processes):
            return


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
        reason = printable(lines[0] if lines else type(exc).__name__)
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
        "logging_level": logging.WARNING,
        "runtime_env": {"env_vars": opencv_pixel_limit_env(max_pixels)},
    }
    count = options.workers
    if not options.address:
        count = options.workers or _cpu_count()
        common["num_cpus"] = count * threads + _task_slots(count)
    previous = signal.getsignal(signal.SIGTERM)
    before = descendants(os.getpid())
    started: dict[int, str] = {}

    def note_started() -> None:
        if not options.address:  # a cluster joined by address keeps its processes
            now = descendants(os.getpid())
            started.update({p: t for p, t in now.items() if before.get(p) != t})

    try:
        try:
            _start(ray, options.address, **common)
        finally:
            note_started()  # a node that failed to start may have left some running
        with _sigterm_exits(previous):
            yield count
    finally:
        note_started()
        with contextlib.suppress(Exception):  # after a failed start too
            ray.shutdown()
        stop_processes(started)


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
