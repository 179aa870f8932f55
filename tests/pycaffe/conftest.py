"""Fixtures for the pycaffe drop-in: the module itself, small nets written to disk, Levi weights."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def caffe():
    """``caffe_compat.pycaffe``, left in CPU mode with no filler seed after the test."""
    import caffe_compat.pycaffe as module
    from caffe_compat.pycaffe import _caffe

    yield module
    module.set_mode_cpu()
    _caffe._seed[0] = None


@pytest.fixture
def write_net(tmp_path):
    """``write_net(text, name="net.prototxt") -> path`` of a prototxt written under tmp_path."""

    def write(text: str, name: str = "net.prototxt") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


@pytest.fixture(scope="session")
def levi_age(shared, tmp_path_factory) -> tuple[Path, Path]:
    """(deploy_age.prototxt, a caffemodel of synthesized weights in the official shapes)."""
    from caffe_compat.io import write_caffemodel
    from caffe_compat.io.writer import definitions_only
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize

    prototxt = shared / "deploy_age.prototxt"
    loaded = load_net(prototxt)
    blobs = synthesize(loaded, seed=11, batch=4)
    weights = tmp_path_factory.mktemp("levi") / "age_net.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
    return prototxt, weights
