"""install(): a bare ``import caffe`` resolves to the drop-in, and uninstall() undoes it."""

from __future__ import annotations

import runpy
import sys
import types

import numpy as np
import pytest

import caffe_compat.pycaffe as pycaffe
from caffe_compat.proto import caffe_pb2

LEGACY_SCRIPT = """
import numpy as np
import caffe
import caffe.io
from caffe.proto import caffe_pb2
from caffe import layers as L, params as P

caffe.set_mode_cpu()
n = caffe.NetSpec()
n.data = L.Input(shape=dict(dim=[2, 3, 4, 4]))
n.pool = L.Pooling(n.data, kernel_size=2, stride=2, pool=P.Pooling.MAX)
n.relu = L.ReLU(n.pool, in_place=True)
with open(PROTOTXT, "w") as f:
    f.write(str(n.to_proto()))
net = caffe.Net(PROTOTXT, caffe.TEST)
net.blobs["data"].data[...] = DATA
RESULT = net.forward()["pool"].copy()
BLOB = caffe.io.array_to_blobproto(RESULT)
IS_PB2 = isinstance(BLOB, caffe_pb2.BlobProto)
"""


@pytest.fixture
def installed():
    """install(), undone after the test whatever happens."""
    module = pycaffe.install()
    yield module
    pycaffe.uninstall()


def test_caffe_is_not_installed_by_importing():
    assert "caffe" not in sys.modules or sys.modules["caffe"] is not pycaffe


def test_import_caffe_resolves_here(installed):
    import caffe
    import caffe.io
    import caffe.proto.caffe_pb2
    from caffe.proto import caffe_pb2 as pb2

    assert caffe is pycaffe is installed
    assert caffe.io is pycaffe.io
    assert pb2 is caffe_pb2 and caffe.proto.caffe_pb2 is caffe_pb2
    assert sys.modules["caffe.classifier"] is sys.modules["caffe_compat.pycaffe.classifier"]
    assert pycaffe.install() is installed  # idempotent


def test_uninstall_restores_what_was_there(monkeypatch):
    other = types.ModuleType("caffe")
    other_io = types.ModuleType("caffe.io")
    monkeypatch.setitem(sys.modules, "caffe", other)
    monkeypatch.setitem(sys.modules, "caffe.io", other_io)
    pycaffe.install()
    try:
        assert sys.modules["caffe"] is pycaffe and sys.modules["caffe.io"] is pycaffe.io
    finally:
        pycaffe.uninstall()
    assert sys.modules["caffe"] is other and sys.modules["caffe.io"] is other_io
    assert "caffe.proto.caffe_pb2" not in sys.modules


def test_legacy_script_runs_unchanged(installed, tmp_path):
    data = np.random.default_rng(0).normal(0, 1, (2, 3, 4, 4)).astype(np.float32)
    script = tmp_path / "legacy.py"
    script.write_text(LEGACY_SCRIPT, encoding="utf-8")
    result = runpy.run_path(
        str(script), init_globals={"PROTOTXT": str(tmp_path / "n.prototxt"), "DATA": data}
    )
    expected = np.maximum(data.reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5)), 0)
    np.testing.assert_array_equal(result["RESULT"], expected)
    assert result["IS_PB2"]
