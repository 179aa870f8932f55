"""The Ray session of a large run, with a stand-in for Ray (no Ray needed): how it runs is
checked when asked, a node that cannot start is one line, SIGTERM runs the cleanup, and the
processes the session started (and only those) are stopped when it ends, SIGKILL for those that
ignore SIGTERM (the watcher for a killed driver: test_scale_processes.py). The same with real Ray
is in test_scale.py (ray tier)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from caffe_compat.app import scale_processes
from caffe_compat.app.scale_processes import alive, start_time
from caffe_compat.app.scale_session import RayOptions, session
from caffe_compat.errors import CaffeCompatError

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")

TIMED_OUT = (
    "The current node timed out during startup. This could happen because some of the raylet "
    "failed to startup or the GCS has become overloaded."
)
STUBBORN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(120)"
)


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(scale_processes, "STOP_GRACE_S", 0.3)


def stubborn() -> subprocess.Popen:
    """A child that ignores SIGTERM (as Ray's dashboard and runtime-env agents do)."""
    child = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    return child


def running(child: subprocess.Popen) -> bool:
    return child.pid in alive({child.pid: start_time(child.pid)})


class StandInRay:
    """``ray`` as the session uses it; ``init`` starts a stubborn child, as Ray starts helpers."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail, self.up, self.children, self.init_args = fail, False, [], None

    def is_initialized(self) -> bool:
        return self.up

    def init(self, **kwargs) -> None:
        self.init_args = kwargs
        self.children.append(stubborn())
        if self.fail:
            raise Exception(self.fail)  # what Ray raises for a node that never came up
        self.up = True

    def shutdown(self) -> None:
        self.up = False


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"device": "tpu"}, "device must be one of auto, cpu, cuda, not 'tpu'"),
        ({"workers": 0}, "workers must be at least 1, got 0"),
        ({"block": -1}, "block must be at least 1, got -1"),
    ],
)
def test_ray_options_are_checked_when_built(fields, words):
    with pytest.raises(CaffeCompatError, match=words):
        RayOptions(**fields)


def test_the_session_stops_what_it_started_and_only_that():
    bystander = stubborn()  # started before the session: not the session's to stop
    ray = StandInRay()
    try:
        with session(ray, RayOptions(workers=2), 1, 1000) as sized:
            assert sized == 2 and running(ray.children[0])
            assert ray.init_args["num_cpus"] == 4  # 2 one-thread workers + 2 task slots
            env = ray.init_args["runtime_env"]["env_vars"]
            assert env == {"OPENCV_IO_MAX_IMAGE_PIXELS": "1000"}
        assert not ray.up and not running(ray.children[0])
        assert running(bystander)
    finally:
        for child in [bystander, *ray.children]:
            child.kill()
            child.wait()


def test_a_node_that_cannot_start_is_one_line(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda kind: (4 << 30, resource.RLIM_INFINITY))
    ray = StandInRay(fail=TIMED_OUT)
    try:
        with pytest.raises(CaffeCompatError) as caught, session(ray, RayOptions(), 1, 1000):
            pytest.fail("the session must not start")
        message = str(caught.value)
        assert message.startswith("could not start Ray here: The current node timed out")
        assert "at most 4 GiB (ulimit -v)" in message and "\n" not in message
        assert not running(ray.children[0])  # what the failed start left is stopped too
    finally:
        for child in ray.children:
            child.kill()
            child.wait()


def test_sigterm_runs_the_cleanup_then_the_old_handler_is_back():
    ray = StandInRay()
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as caught, session(ray, RayOptions(workers=1), 1, 1000):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
            pytest.fail("SIGTERM did not end the session")
        assert caught.value.code == 128 + signal.SIGTERM
        assert not ray.up and not running(ray.children[0])
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        for child in ray.children:
            child.kill()
            child.wait()


def test_a_session_started_elsewhere_is_left_alone():
    ray = StandInRay()
    ray.up = True  # the caller's own ray.init
    with session(ray, RayOptions(workers=3), 1, 1000) as sized:
        assert sized == 3
    assert ray.up and ray.init_args is None
