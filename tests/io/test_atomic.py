"""atomic_output: all or nothing, and the permissions the umask asks for."""

from __future__ import annotations

import os

import pytest

from caffe_compat.io.atomic import atomic_output


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_file_follows_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with atomic_output(tmp_path / "out.bin") as tmp:
            assert tmp.stat().st_mode & 0o777 == 0o666 & ~umask  # already while being written
            tmp.write_bytes(b"data")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "out.bin").read_bytes() == b"data"


def test_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "out.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert (tmp_path / "out.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
