"""The sizes of ShuffleChannel, Reorg, Transpose, Reverse, Flip and Im2col (shapes/rearrange.py),
worked by hand from the layers' Reshape."""

from __future__ import annotations

import pytest

from caffe_compat.ir.load import load_net

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 8 dim: 6 dim: 10 } } }\n'


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        ('type: "ShuffleChannel" shuffle_channel_param { group: 4 }', (2, 8, 6, 10)),
        ('type: "Reorg" reorg_param { stride: 2 }', (2, 32, 3, 5)),
        ('type: "Transpose" transpose_param { dim: 3 dim: 0 dim: 2 dim: 1 }', (10, 2, 6, 8)),
        ('type: "Reverse" reverse_param { axis: 3 }', (2, 8, 6, 10)),
        ('type: "Flip"', (2, 8, 6, 10)),
        ('type: "Im2col" convolution_param { kernel_size: 3 pad: 1 }', (2, 72, 6, 10)),
        ('type: "Im2col" convolution_param { kernel_size: 2 stride: 2 }', (2, 32, 3, 5)),
    ],
)
def test_top_shape(tmp_path, layer, shape):
    path = tmp_path / "n.prototxt"
    path.write_text(INPUT + f'layer {{ name: "x" bottom: "data" top: "x" {layer} }}')
    assert load_net(path).graph.shapes["x"] == shape
