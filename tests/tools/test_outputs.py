"""What convert and every atomic write leave on disk: the user's umask, no stale temporaries, a
set of outputs replaced together, and no pickle (the record of their source: test_provenance.py;
the torch-weights format: test_torch_weights.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from caffe_compat.errors import CaffeCompatError
from caffe_compat.io import atomic
from caffe_compat.io.atomic import atomic_output, atomic_outputs, remove_stale_partials
from caffe_compat.tools import convert as convert_module
from caffe_compat.tools.convert import convert


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(value: int) -> None:
        os.umask(value)

    yield set_mask
    os.umask(previous)


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


# --------------------------------------------------------------------------------------------
# Atomic writes


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected, small):
    umask(mask)
    with atomic_output(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"x")
    assert mode(tmp_path / "a.bin") == expected
    prototxt, (weights, _) = small
    result = convert(
        prototxt,
        weights,
        out_prefix=tmp_path / "m",
        targets=["onnx", "torch", "torch-weights"],
        check=False,
    )
    assert {mode(p) for p in result.outputs.values()} == {expected}


def test_a_writer_that_replaces_the_temporary_file_still_gets_the_umask_mode(tmp_path, umask):
    umask(0o022)
    with atomic_output(tmp_path / "a.bin") as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    assert mode(tmp_path / "a.bin") == 0o644


def test_no_overwrite_is_race_free_and_all_or_none(tmp_path):
    (tmp_path / "b.txt").write_text("old")
    with (
        pytest.raises(CaffeCompatError, match="refusing to overwrite"),
        atomic_outputs([tmp_path / "a.txt", tmp_path / "b.txt"], overwrite=False) as (a, b),
    ):
        a.write_text("new a")
        b.write_text("new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]  # no temporaries, no a.txt
    assert (tmp_path / "b.txt").read_text() == "old"


def test_a_failed_block_replaces_nothing(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    with (
        pytest.raises(RuntimeError),
        atomic_outputs([tmp_path / "a.txt", tmp_path / "b.txt"]) as (a, _),
    ):
        a.write_text("new")
        raise RuntimeError("the second writer failed")
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["old", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_set_interrupted_between_renames_never_mixes_old_and_new(tmp_path, monkeypatch):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    calls = []
    real = os.replace

    def replace_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the first rename
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace_then_die)
    with (
        pytest.raises(KeyboardInterrupt),
        atomic_outputs([tmp_path / "a.txt", tmp_path / "b.txt"]) as (a, b),
    ):
        a.write_text("new")
        b.write_text("new")
    left = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert left == {"a.txt": "new"}  # b is missing, not old beside a new a


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "m.onnx"
    pid = dead_pid()
    stale = tmp_path / f".m.{pid}.0a1b2c3d.partial.onnx"
    running = tmp_path / f".m.{os.getpid()}.0a1b2c3d.partial.onnx"
    other_target = tmp_path / f".n.{pid}.0a1b2c3d.partial.onnx"
    foreign = tmp_path / f".m.{pid}.notours.partial.onnx"
    for path in (stale, running, other_target, foreign):
        path.write_bytes(b"x")
    assert remove_stale_partials(target) == [stale]
    assert sorted(tmp_path.iterdir()) == sorted([running, other_target, foreign])


# --------------------------------------------------------------------------------------------
# convert: sets and stale temporaries


def test_a_failing_writer_leaves_the_previous_outputs(small, tmp_path, monkeypatch):
    prototxt, (weights, other) = small
    convert(
        prototxt, weights, out_prefix=tmp_path / "m", targets=["onnx", "torch-weights"], check=False
    )
    before = {p.name: p.read_bytes() for p in tmp_path.glob("m.*")}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert_module, "save_torch_weights", broken)
    with pytest.raises(OSError):
        convert(
            prototxt,
            other,
            out_prefix=tmp_path / "m",
            targets=["onnx", "torch-weights"],
            check=False,
            force=True,
        )
    assert {p.name: p.read_bytes() for p in tmp_path.glob("m.*")} == before  # ONNX not replaced
    assert not list(tmp_path.glob(".m.*"))


def test_convert_clears_what_an_interrupted_run_left(small, tmp_path):
    prototxt, (weights, _) = small
    pid = dead_pid()
    stale = [tmp_path / f".m.{pid}.deadbeef.partial{s}" for s in (".onnx", ".pt2", ".safetensors")]
    for path in stale:
        path.write_bytes(b"half")
    convert(prototxt, weights, out_prefix=tmp_path / "m", targets=["onnx"], check=False)
    assert not any(p.exists() for p in stale)


def test_no_pickle_in_what_convert_writes(small, tmp_path):
    """Neither the ONNX file nor the torch-weights file holds a pickle opcode stream."""
    prototxt, (weights, _) = small
    result = convert(
        prototxt, weights, out_prefix=tmp_path / "m", targets=["onnx", "torch-weights"], check=False
    )
    for path in result.outputs.values():
        head = path.read_bytes()[:2]
        assert head != b"\x80\x02" and head[:1] != b"\x80"  # pickle protocol 2+ header
    header_size = int.from_bytes(result.outputs["torch-weights"].read_bytes()[:8], "little")
    header = json.loads(result.outputs["torch-weights"].read_bytes()[8 : 8 + header_size])
    assert header["__metadata__"]["format"] == "caffe-compat.torch-weights"
