"""BoxOutput in the float64 reference: one position decoded by hand from box_output_layer.cpp,
and the three overlap modes of BoxIOU on two boxes worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffe_compat.reference.box_output import box_iou


def test_one_position_by_hand(run_layers):
    """One 1 x 2 map, 2 classes: position (0, 1) scores 3 - 1 = 2. Offsets x 0.2, y -0.9
    (clamped to -0.5), w ln 1.5, h 5 (clamped to ln 2); field 10, stride 4: centre
    0.2 * 10 + 1.5 * 4 = 8 and -0.5 * 10 + 0.5 * 4 = -3; size 15 x 20; corner (0.5, -13 -> 0);
    width at most 2 * 4 - 0.5 = 7.5, height at most 1 * 4 - 0 = 4: min_size 4 keeps it, 5 not."""
    m = np.zeros((1, 6, 1, 2))
    m[0, :, 0, 0] = [5, 0, 0, 0, 0, 0]  # background wins: no box
    m[0, :, 0, 1] = [1, 3, 0.2, -0.9, math.log(1.5), 5]
    layer = (
        'layer { name: "b" type: "BoxOutput" bottom: "m" top: "r" top: "s" box_output_param { '
        "field_h: 10 field_w: 10 downsample_rate: 4 min_size: %s } }"
    )
    out = run_layers(layer % 4, m=m)
    np.testing.assert_allclose(out["s"].ravel(), [0, 0.5, 0, 8, 4, 2])
    np.testing.assert_allclose(out["r"].ravel(), [0, 0.5, 0, 8, 4])
    dummy = run_layers(layer % 5, m=m)  # nothing left: the fork's dummy ROI
    np.testing.assert_array_equal(dummy["r"].ravel(), [0, 1, 1, 10, 10])
    np.testing.assert_array_equal(dummy["s"].ravel(), [0] * 6)


@pytest.mark.parametrize("mode, expected", [("IOU", 4 / 24), ("IOMU", 4 / 12), ("IOFU", 4 / 16)])
def test_overlap_modes(mode, expected):
    """4 x 4 and 4 x 3 boxes overlapping on 2 x 2: union 16 + 12 - 4, smaller 12, first 16."""
    first = np.array([0.0, 0.0, 4.0, 4.0])
    other = np.array([[2.0, 2.0, 4.0, 3.0]])
    np.testing.assert_allclose(box_iou(first, other, mode), [expected])


def test_decode_bbox_by_hand(run_layers):
    """ROI [10, 20, 29, 59]: pw 20, ph 40, centre (19.5, 39.5). Object offsets 5, -2.5, 5 ln 2, 0
    times std 0.1, 0.1, 0.2, 0.2: dx 0.5 -> 0.5 * 20 + 19.5 = 29.5, width 20 * 2 = 40, x1 29.5 -
    39 / 2 = 10, x2 10 + 40 - 1 = 49; dy -0.25 -> -10 + 39.5 = 29.5, height 40, y1 10, y2 49. The
    background's offsets (99) are not read; without bbox_reg_param std is 1 and mean 0."""
    offsets = np.array([[99, 99, 99, 99, 5, -2.5, 5 * math.log(2), 0]], float)
    rois = np.array([1, 10, 20, 29, 59], float).reshape(1, 5, 1, 1)
    layer = 'layer { name: "d" type: "DecodeBBox" bottom: "o" bottom: "r" top: "b" %s }'
    stats = [*("bbox_mean: 0" for _ in range(4)), *(f"bbox_std: {v}" for v in (0.1, 0.1, 0.2, 0.2))]
    reg = f"bbox_reg_param {{ {' '.join(stats)} }}"
    out = run_layers(layer % reg, o=offsets, r=rois)["b"]
    assert out.shape == (1, 5, 1, 1)
    np.testing.assert_allclose(out.ravel(), [1, 10, 10, 49, 49], atol=1e-9)
    plain = run_layers(layer % "", o=offsets / [1, 1, 1, 1, 10, 10, 5, 5], r=rois)["b"]
    np.testing.assert_allclose(plain.ravel(), [1, 10, 10, 49, 49], atol=1e-9)
