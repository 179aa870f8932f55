"""The processes a local Ray session started: found, told apart from reused pids, stopped.

``ray.shutdown`` stops the processes Ray tracks, but its dashboard and runtime-env agents ignore
SIGTERM and outlive a driver that dies without shutting down (SIGKILL, the OOM killer) by a
minute or more. So the session notes what it started and stops any still running at its end
(SIGTERM, then SIGKILL), and a small watcher process (``python -m
caffe_compat.app.scale_processes``) does the same if the driver dies first: it reads the noted
processes from a pipe and acts when the pipe closes, which the kernel does however the driver
ends. Standard library only, so the watcher starts in a blink. Linux (``/proc``); elsewhere
nothing is found and nothing is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

STOP_GRACE_S = 2.0  # between SIGTERM and SIGKILL

Processes = dict[int, str]  # pid -> its start time (the pair names one process)


def _stat_fields(pid: int) -> list[bytes] | None:
    """``/proc/<pid>/stat`` after the command name (state, ppid, ...), None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (with the pid, a process's identity), None if gone."""
    fields = _stat_fields(pid)
    return None if fields is None else fields[19].decode()


def descendants(pid: int) -> Processes:
    """Every process below ``pid`` (children, their children...) with its start time; empty
    where ``/proc`` is not there to ask."""
    try:
        entries = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return {}
    children: dict[int, list[int]] = {}
    for entry in entries:
        fields = _stat_fields(entry)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(entry)
    found: Processes = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            started = start_time(child)
            if started is not None and child not in found:
                found[child] = started
                stack.append(child)
    return found


def alive(processes: Processes) -> list[int]:
    """The pids in ``processes`` still running as the same process (not reused, not zombies)."""
    running = []
    for pid, started in processes.items():
        fields = _stat_fields(pid)
        if fields is not None and fields[19].decode() == started and fields[0] != b"Z":
            running.append(pid)
    return running


def stop(processes: Processes, grace: float | None = None) -> None:
    """SIGTERM to each process of ``processes`` still running, SIGKILL to any still there after
    ``grace`` seconds (default ``STOP_GRACE_S``)."""
    grace = STOP_GRACE_S if grace is None else grace
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive(processes):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while alive(processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive(processes):
            return


class Watcher:
    """The watcher process: ``note`` tells it about processes; ``close`` ends it (after the
    session has stopped them itself); if this process dies, it stops them."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid = self.process.pid

    def note(self, processes: Processes) -> None:
        lines = "".join(f"{pid} {started}\n" for pid, started in processes.items())
        with contextlib.suppress(OSError, ValueError):  # a watcher gone: nothing to tell
            self.process.stdin.write(lines.encode())  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=STOP_GRACE_S * 2 + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _watch() -> None:
    """The watcher's loop: note processes until the pipe closes, then stop what still runs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    noted: Processes = {}
    for line in sys.stdin.buffer:
        with contextlib.suppress(ValueError):
            pid, started = line.split()
            noted[int(pid)] = started.decode()
    stop(noted)


if __name__ == "__main__":
    _watch()
