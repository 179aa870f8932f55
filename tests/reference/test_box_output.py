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
