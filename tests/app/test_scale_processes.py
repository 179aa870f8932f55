"""The processes a local Ray session started: found below this process, told apart from
reused pids, stopped (SIGKILL for those that ignore SIGTERM, as Ray's agents do), and stopped by
the watcher when the driver is killed outright. Child processes stand in for Ray's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from caffe_compat.app.scale_processes import alive, descendants, stop

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")

STUBBORN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(120)"
)


def stubborn() -> subprocess.Popen:
    """A child that ignores SIGTERM."""
    child = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    return child


def test_descendants_and_alive_follow_the_process_not_the_pid():
    child = stubborn()
    try:
        found = descendants(os.getpid())
        assert child.pid in found and os.getpid() not in found
        assert alive({child.pid: found[child.pid]}) == [child.pid]
        assert alive({child.pid: "1"}) == []  # same pid, another start time: another process
    finally:
        child.kill()
        child.wait()
    assert alive({child.pid: found[child.pid]}) == []


def test_stop_processes_escalates_to_sigkill():
    child = stubborn()
    try:
        found = descendants(os.getpid())
        assert child.pid in found
        started = time.monotonic()
        stop({child.pid: found[child.pid]}, grace=0.5)
        assert not alive({child.pid: found[child.pid]}) and time.monotonic() - started < 5
        assert child.wait(timeout=5) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


WATCHED_DRIVER = """
import subprocess, sys
from caffe_compat.app.scale_processes import Watcher, descendants
import os
watcher = Watcher()
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE)
assert child.stdout.readline() == b"ready\\n"
mine = {p: t for p, t in descendants(os.getpid()).items() if p != watcher.pid}
watcher.note(mine)
print(child.pid, mine[child.pid], flush=True)
import time; time.sleep(120)
"""


def test_the_watcher_stops_them_when_the_driver_is_killed():
    driver = subprocess.Popen(
        [sys.executable, "-c", WATCHED_DRIVER, STUBBORN], stdout=subprocess.PIPE
    )
    orphan: dict[int, str] = {}
    try:
        pid, started = driver.stdout.readline().split()
        orphan = {int(pid): started.decode()}
        assert alive(orphan)
        driver.kill()  # SIGKILL: no cleanup of its own
        driver.wait()
        deadline = time.monotonic() + 10
        while alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(orphan)
    finally:
        driver.kill()
        driver.wait()
        for pid in alive(orphan):
            os.kill(pid, signal.SIGKILL)
