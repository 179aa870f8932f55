"""What the process can still get: cgroup v1 and v2 limits (the tightest of its groups), and the
address space RLIMIT_AS leaves once the libraries and thread pools still to start are counted."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from caffe_compat import headroom


def fake_files(monkeypatch, files: dict[str, str]) -> None:
    monkeypatch.setattr(headroom, "_read", lambda path: files.get(str(path)))


def test_cgroup_v2_takes_the_tightest_group_and_leaves_out_page_cache(monkeypatch):
    root = "/cg"
    fake_files(
        monkeypatch,
        {
            "/proc/self/cgroup": "0::/jobs/me\n",
            "/cg/jobs/me/memory.max": "max\n",
            "/cg/jobs/me/memory.current": "100\n",
            "/cg/jobs/memory.max": str(4 << 30),
            "/cg/jobs/memory.current": str(3 << 30),
            "/cg/jobs/memory.stat": f"anon 5\ninactive_file {1 << 30}\n",
            "/cg/memory.max": str(64 << 30),
            "/cg/memory.current": str(1 << 30),
        },
    )
    found = headroom.cgroup(root)
    assert found is not None and found.left == 2 << 30  # 4 GiB - (3 GiB - 1 GiB of cache)
    assert "cgroup" in found.source and "4 GiB" in found.source


def test_cgroup_v1_is_read(monkeypatch):
    fake_files(
        monkeypatch,
        {
            "/proc/self/cgroup": "9:pids:/x\n4:memory:/box\n",
            "/cg/memory/box/memory.limit_in_bytes": str(2 << 30),
            "/cg/memory/box/memory.usage_in_bytes": str(1 << 30),
            "/cg/memory/memory.limit_in_bytes": "9223372036854771712",  # unlimited
            "/cg/memory/memory.usage_in_bytes": str(9 << 30),
        },
    )
    found = headroom.cgroup("/cg")
    assert found is not None and found.left == 1 << 30


def test_no_cgroup_limit(monkeypatch):
    fake_files(monkeypatch, {"/proc/self/cgroup": "0::/\n", "/cg/memory.max": "max\n"})
    assert headroom.cgroup("/cg") is None


def test_libraries_and_threads_still_to_start_are_counted(monkeypatch):
    monkeypatch.setattr(headroom, "_cpus", lambda: 16)
    monkeypatch.setattr(headroom.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(headroom, "_status", lambda field: 4 if field == "Threads" else None)
    modules = {k: v for k, v in sys.modules.items() if k not in headroom.LIBRARY_MAPPINGS}
    monkeypatch.setattr(headroom.sys, "modules", modules)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    libraries, threads = headroom.pending_mappings()
    assert libraries == sum(headroom.LIBRARY_MAPPINGS.values())
    new = 3 * 16 + 2 - 4
    assert threads >= new * (headroom.MALLOC_ARENA + (1 << 20))
    monkeypatch.setenv("OMP_NUM_THREADS", "64")  # a bigger torch pool reserves more
    assert headroom.pending_mappings()[1] > threads


_CHILD = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))
from caffe_compat import headroom
before = headroom.available()
import cv2, onnxruntime, torch
torch.ones(512, 512) @ torch.ones(512, 512)  # the OpenMP pool starts
mapped = headroom._status("VmSize")
print(before.left, (4 << 30) - mapped, before.source)
"""


def test_the_address_space_left_is_what_remains_after_the_libraries_load():
    """Under a 4 GiB RLIMIT_AS, what the budget may use is at most what is still unmapped once
    torch, OpenCV and ONNX Runtime are loaded and running (the old estimate, RLIMIT_AS minus
    what was mapped before they loaded, was about 1 GiB more)."""
    pytest.importorskip("cv2")
    pytest.importorskip("onnxruntime")
    run = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    promised, left, source = run.stdout.split(" ", 2)
    assert int(promised) <= int(left), (promised, left)
    assert "RLIMIT_AS of 4 GiB" in source and "libraries and threads" in source


def test_hard_limit_names_rlimit_as():
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY));"
        "from caffe_compat import headroom; print(headroom.hard_limit())"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "RLIMIT_AS of 6 GiB" in run.stdout


LEAN_PROBE = """
import resource, sys
if sys.argv[1] == "capped":
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
import numpy as np
from caffe_compat.headroom import lean_allocator

def mapped():
    line = [l for l in open("/proc/self/status") if l.startswith("VmSize")][0]
    return int(line.split()[1]) << 10

print(lean_allocator())
big = np.ones(2 << 20)  # a 16 MiB block freed: glibc's threshold grows to 16 MiB
del big
start = mapped()
kept, freed = [], []
for _ in range(100):
    freed.append(np.ones(1 << 19))  # 4 MiB blocks, freed below
    kept.append(np.ones(1 << 14))  # 128 KiB between them, kept
del freed
print((mapped() - start) >> 20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a platform feature: glibc's malloc")
def test_under_an_address_space_cap_freed_blocks_go_back_to_the_system():
    """The command-line tool's allocator setting: only under RLIMIT_AS, and then 400 MiB of
    freed 4 MiB blocks interleaved with kept ones no longer stay mapped."""

    def probe(mode: str) -> tuple[str, int]:
        done = subprocess.run(
            [sys.executable, "-c", LEAN_PROBE, mode], capture_output=True, text=True, check=True
        )
        changed, kept = done.stdout.split()
        return changed, int(kept)

    changed, kept = probe("capped")
    assert changed == "True" and kept < 100
    changed, kept = probe("free")
    assert changed == "False" and kept > 300  # glibc's default: the freed blocks stay mapped
