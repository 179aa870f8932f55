"""BN's blobs by fork (shapes/normalization.py): caffe-segnet's two, yjxiong's/PSPNet's four,
told apart by the fields only one fork has."""

from __future__ import annotations

import pytest

from caffe_compat.ir.load import load_net

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 dim: 4 dim: 4 } } }\n'


@pytest.mark.parametrize(
    ("params", "blobs"),
    [
        ("", 2),
        ("bn_param { bn_mode: INFERENCE }", 2),
        ('bn_param { scale_filler { type: "constant" value: 1 } }', 2),
        ("bn_param { frozen: true }", 4),
        ("bn_param { momentum: 0.95 }", 4),
        ('bn_param { slope_filler { type: "constant" value: 1 } }', 4),
    ],
)
def test_bn_blobs(tmp_path, params, blobs):
    path = tmp_path / "n.prototxt"
    path.write_text(INPUT + f'layer {{ name: "bn" type: "BN" bottom: "data" top: "bn" {params} }}')
    assert load_net(path).inference.params["bn"] == [(1, 6, 1, 1)] * blobs
