"""Against real BVLC Caffe: its blobs after a forward, and the bytes of its own ``net.save``.

../shared holds files written by real Caffe 1.0: a caffemodel saved with ``net.save`` and every
blob its forward computed, for a net of tricky semantics and for the Levi-Hassner age net. Loading
the file and saving it again here must give the same bytes; every blob must match Caffe's within
1e-4 x its largest magnitude (fp32 summation order; the Levi README measures up to 7.4e-5 on prob).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def semantics(shared) -> Path:
    folder = shared.parent / "caffe_semantics"
    if not (folder / "weights.caffemodel").is_file():
        pytest.skip(f"{folder} is absent: no real-Caffe files to compare with")
    return folder


def _check_blobs(net, reference) -> None:
    assert set(reference.files) <= set(net.blobs)
    for name in reference.files:
        ref = reference[name]
        got = net.blobs[name].data
        assert got.shape == ref.shape, name
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max(), err_msg=name)


def test_caffe_semantics_net(caffe, semantics, tmp_path):
    net = caffe.Net(str(semantics / "deploy.prototxt"), caffe.TEST,
                    weights=str(semantics / "weights.caffemodel"))  # fmt: skip
    reference = np.load(semantics / "blobs.npz")
    assert list(net.blobs) == list(reference.files)
    net.blobs["data"].data[...] = reference["data"]
    net.forward()
    _check_blobs(net, reference)
    net.save(str(tmp_path / "again.caffemodel"))
    original = (semantics / "weights.caffemodel").read_bytes()
    assert (tmp_path / "again.caffemodel").read_bytes() == original


def test_levi_age_net(caffe, caffe_reference, shared, tmp_path):
    written = caffe_reference / "age_seed3_caffe_written.caffemodel"
    net = caffe.Net(str(shared / "deploy_age.prototxt"), str(written), caffe.TEST)
    assert net._layer_names[:3] == ["input", "conv1", "relu1"]
    net.save(str(tmp_path / "again.caffemodel"))
    assert (tmp_path / "again.caffemodel").read_bytes() == written.read_bytes()

    reference = np.load(caffe_reference / "age_seed3_blobs.npz")
    net.blobs["data"].reshape(*reference["data"].shape)
    net.reshape()
    net.blobs["data"].data[...] = reference["data"]
    net.forward()
    _check_blobs(net, reference)
