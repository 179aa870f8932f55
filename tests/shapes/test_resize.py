"""Upsample's and Interp's sizes (shapes/resize.py) against the forks' Reshape arithmetic worked
by hand, and the settings the forks refuse, each named in one error."""

from __future__ import annotations

import pytest

from caffe_compat.errors import CaffeCompatError
from caffe_compat.ir.load import load_net


def data(c: int = 3, h: int = 13, w: int = 17) -> str:
    return (
        f'layer {{ name: "data" type: "Input" top: "data" top: "mask" input_param {{ shape {{ dim: 1 '
        f"dim: {c} dim: {h} dim: {w} }} shape {{ dim: 1 dim: {c} dim: {h} dim: {w} }} }} }}\n"
    )


def top_shape(tmp_path, layer: str, top: str):
    path = tmp_path / "n.prototxt"
    path.write_text(data() + layer)
    return load_net(path).graph.shapes[top]


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ("zoom_factor: 4", (49, 65)),  # 13 + 12 * 3, 17 + 16 * 3
        ("shrink_factor: 4", (4, 5)),  # 12 // 4 + 1, 16 // 4 + 1
        ("height: 5 width: 6", (5, 6)),
        ("shrink_factor: 2 zoom_factor: 2", (13, 17)),  # 7, 9 then 7 + 6, 9 + 8
        ("zoom_factor: 2 height: 5 width: 6", (25, 33)),  # a lone factor wins over the size
        ("shrink_factor: 2 zoom_factor: 3 height: 5 width: 6", (5, 6)),  # the size over both
        ("zoom_factor: 2 pad_beg: -1 pad_end: -2", (19, 27)),  # 13 - 3 = 10 -> 19; 14 -> 27
    ],
)
def test_interp_size(tmp_path, params, size):
    layer = (
        f'layer {{ name: "i" type: "Interp" bottom: "data" top: "i" interp_param {{ {params} }} }}'
    )
    assert top_shape(tmp_path, layer, "i") == (1, 3, *size)


def test_interp_takes_a_second_bottoms_size(tmp_path):
    layer = (
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
        'layer { name: "i" type: "Interp" bottom: "p" bottom: "data" top: "i" }'
    )
    assert top_shape(tmp_path, layer, "i") == (1, 3, 13, 17)


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ("upsample_h: 26 upsample_w: 30", (26, 30)),
        ("", (26, 34)),  # caffe-segnet's default scale 2
        ("scale: 3", (39, 51)),
        ("scale_h: 2 scale_w: 3", (26, 51)),
        ("pad_out_h: true", (25, 34)),
    ],
)
def test_segnet_upsample_size(tmp_path, params, size):
    layer = (
        'layer { name: "u" type: "Upsample" bottom: "data" bottom: "mask" top: "u" '
        f"upsample_param {{ {params} }} }}"
    )
    assert top_shape(tmp_path, layer, "u") == (1, 3, *size)


@pytest.mark.parametrize(("params", "scale"), [("", 1), ("upsample_param { scale: 2 }", 2)])
def test_yolo_upsample_size(tmp_path, params, scale):
    layer = f'layer {{ name: "u" type: "Upsample" bottom: "data" top: "u" {params} }}'
    assert top_shape(tmp_path, layer, "u") == (1, 3, 13 * scale, 17 * scale)


@pytest.mark.parametrize(
    ("layer", "words"),
    [
        (
            'type: "Interp" bottom: "data" top: "x" interp_param { pad_beg: 1 zoom_factor: 2 }',
            "pad_beg",
        ),
        ('type: "Interp" bottom: "data" top: "x"', "zoom_factor"),
        ('type: "Interp" bottom: "data" top: "x" interp_param { zoom_factor: 0 }', "zoom_factor"),
        (
            'type: "Upsample" bottom: "data" bottom: "mask" top: "x" upsample_param { scale: 1 }',
            "scale",
        ),
        (
            'type: "Upsample" bottom: "data" bottom: "mask" top: "x" upsample_param { scale: 3 pad_out_w: true }',
            "pad_out",
        ),
        (
            'type: "Upsample" bottom: "data" bottom: "mask" top: "x" upsample_param { scale_h: 2 }',
            "scale_w",
        ),
    ],
)
def test_settings_the_forks_refuse(tmp_path, layer, words):
    path = tmp_path / "n.prototxt"
    path.write_text(data() + f'layer {{ name: "x" {layer} }}')
    with pytest.raises(CaffeCompatError, match=words) as caught:
        load_net(path)
    assert 'layer "x"' in str(caught.value)
