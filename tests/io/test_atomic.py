"""atomic_output: all or nothing, and the permissions the umask asks for."""

from __future__ import annotations

import os
import stat

import pytest

from caffe_compat.errors import CaffeCompatError
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


def _non_regular(tmp_path, kind: str):
    """A path holding a ``kind`` of thing that is not a regular file."""
    import socket

    path = tmp_path / f"out_{kind}.caffemodel"
    if kind == "folder":
        path.mkdir()
    elif kind == "symlink":
        (tmp_path / "real.bin").write_bytes(b"precious")
        path.symlink_to(tmp_path / "real.bin")
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this platform")
        os.mkfifo(path)
    elif kind == "socket":
        if not hasattr(socket, "AF_UNIX"):
            pytest.skip("no Unix sockets on this platform")
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    elif kind == "device":
        # A node of our own (/dev/null's numbers) in the test folder: never a real device, so a
        # regression replaces nothing outside the test.
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except (AttributeError, PermissionError, OSError):
            pytest.skip("the platform does not let this user make a device node")
    return path


KINDS = ["folder", "symlink", "dangling symlink", "fifo", "socket", "device"]
WORDS = {
    "folder": "a folder",
    "symlink": "a symbolic link",
    "dangling symlink": "a symbolic link",
    "fifo": "a FIFO",
    "socket": "a socket",
    "device": "a character device",
}


@pytest.mark.parametrize("kind", KINDS)
def test_non_regular_targets_are_refused_untouched(tmp_path, kind):
    path = _non_regular(tmp_path, kind)
    before = os.lstat(path)
    for overwrite in (True, False):
        with pytest.raises(CaffeCompatError) as info, atomic_output(path, overwrite=overwrite):
            raise AssertionError("the block must not run")
        message = str(info.value)
        assert "\n" not in message and str(path) in message and WORDS[kind] in message
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    if path.parent == tmp_path:
        assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_a_target_replaced_while_writing_is_refused(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(CaffeCompatError, match="a symbolic link"), atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
        target.symlink_to(tmp_path / "elsewhere")
    assert target.is_symlink() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("kind", ["device", "fifo", "symlink", "folder"])
def test_pycaffe_save_refuses_non_regular_targets(tmp_path, kind):
    from caffe_compat.pycaffe import Net

    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        "inner_product_param { num_output: 2 } }\n"
    )
    net = Net(str(prototxt), 1)
    path = _non_regular(tmp_path, kind)
    for save in (net.save, net.save_hdf5):
        with pytest.raises(CaffeCompatError, match=WORDS[kind]):
            save(str(path))
    if kind == "symlink":
        assert (tmp_path / "real.bin").read_bytes() == b"precious"


def test_the_refusal_is_an_os_error_too(tmp_path):
    """Callers that treat an unwritable place as such (a cache going on uncached) catch it as an
    OSError; the CLI shows it as one line (a CaffeCompatError)."""
    folder = tmp_path / "out.bin"
    folder.mkdir()
    with pytest.raises(OSError) as info, atomic_output(folder):
        raise AssertionError("the block must not run")
    assert isinstance(info.value, CaffeCompatError) and "a folder" in str(info.value)
