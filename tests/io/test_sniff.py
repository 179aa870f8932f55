"""File-kind diagnosis: what a file really is, from its first bytes."""

from __future__ import annotations

import pytest

from caffe_compat.io.sniff import HDF5_MAGIC, Kind, explain, sniff
from caffe_compat.proto import caffe_pb2

PROTOTXT = b'name: "n"\nlayer {\n  name: "conv"\n  type: "Convolution"\n}\n'


def small_caffemodel() -> bytes:
    net = caffe_pb2.NetParameter(name="n")
    layer = net.layer.add(name="ip", type="InnerProduct")
    layer.blobs.add(data=[0.25, -1.5, 3.0]).shape.dim.append(3)
    return net.SerializeToString()


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"", Kind.EMPTY),
        (PROTOTXT, Kind.TEXT),
        ("# Réseau\n".encode("latin-1") + PROTOTXT, Kind.TEXT),  # bad UTF-8 is a text problem
        ("# 网络\n".encode("gbk") + PROTOTXT, Kind.TEXT),
        (PROTOTXT + "é".encode()[:1], Kind.TEXT),  # a character cut by the sample's end
        (small_caffemodel(), Kind.BINARY),
        (b"\x00" + PROTOTXT, Kind.BINARY),
        (HDF5_MAGIC + b"\x00" * 100, Kind.HDF5),
        (HDF5_MAGIC[:4], Kind.HDF5),  # a signature cut short is still HDF5 (then: truncated)
        (b"PK\x03\x04rest", Kind.ZIP),
        (b"\x1f\x8b\x08\x00", Kind.GZIP),
        (b"  <!DOCTYPE HTML>\n<html>", Kind.HTML),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 12\n", Kind.LFS_POINTER),
    ],
    ids=[
        "empty", "prototxt", "latin-1", "gbk", "cut-char", "caffemodel", "nul", "hdf5",
        "hdf5-cut", "zip", "gzip", "html", "lfs",
    ],
)  # fmt: skip
def test_sniff(head, kind):
    assert sniff(head) is kind


def test_explain_names_the_expected_file_and_the_fix():
    lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 45661179\n"
    text = explain(Kind.LFS_POINTER, lfs, "binary caffemodel")
    assert (
        "not the binary caffemodel" in text and "45661179 bytes" in text and "git lfs pull" in text
    )
    assert explain(Kind.TEXT, PROTOTXT, "text prototxt") is None
    assert explain(Kind.BINARY, b"\x08", "binary caffemodel") is None


def test_an_empty_photo_is_called_empty(tmp_path):
    from caffe_compat.app.images import read_image
    from caffe_compat.errors import CaffeCompatError

    pytest.importorskip("cv2")
    empty = tmp_path / "photo.jpg"
    empty.write_bytes(b"")
    with pytest.raises(CaffeCompatError) as info:
        read_image(empty)
    assert str(info.value) == f"{empty}: not an image: empty (0 bytes)"
