"""Proposal in the float64 reference: py-faster-rcnn's anchors (its generate_anchors docstring
table, given 1-based there) and boxes, scores and NMS worked out by hand on a two-cell map."""

from __future__ import annotations

import numpy as np

from caffe_compat.shapes.proposal import generate_anchors

# py-faster-rcnn's generate_anchors.py documents its output (1-based, from the MATLAB code).
DOCUMENTED = [
    [-83, -39, 100, 56],
    [-175, -87, 192, 104],
    [-359, -183, 376, 200],
    [-55, -55, 72, 72],
    [-119, -119, 136, 136],
    [-247, -247, 264, 264],
    [-35, -79, 52, 96],
    [-79, -167, 96, 184],
    [-167, -343, 184, 360],
]


def test_anchors_are_py_faster_rcnns():
    anchors = generate_anchors(16, (0.5, 1.0, 2.0), (8.0, 16.0, 32.0))
    np.testing.assert_array_equal(anchors, np.array(DOCUMENTED) - 1)


def layer(nms: float = 0.7, min_size: int = 16) -> str:
    """One 16 x 16 anchor per cell (ratio 1, scale 1), stride 16."""
    return (
        'layer { name: "p" type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "info" '
        f'top: "rois" top: "scores" proposal_param {{ feat_stride: 16 ratio: 1 scale: 1 '
        f"nms_thresh: {nms} min_size: {min_size} }} }}"
    )


def two_cells(dx: float = 0.0):
    cls = np.array([0.7, 0.2, 0.3, 0.8]).reshape(1, 2, 1, 2)  # object scores 0.3 and 0.8
    bbox = np.zeros((1, 4, 1, 2))
    bbox[0, 0, 0, 0] = dx
    return {"cls": cls, "bbox": bbox, "info": np.array([[20.0, 40.0, 1.0]])}


def test_two_boxes_by_hand(run_layers):
    """Anchor [0, 0, 15, 15] decodes to [0, 0, 16, 16] (centre 8, half width 8: the original's
    x2 = centre + w / 2); the second cell's is 16 pixels right. Overlap 17 / (289 + 289 - 17)
    = 0.03 keeps both, best score first."""
    out = run_layers(layer(), **two_cells())
    np.testing.assert_array_equal(out["rois"], [[0, 16, 0, 32, 16], [0, 0, 0, 16, 16]])
    np.testing.assert_array_equal(out["scores"], [[0.8], [0.3]])


def test_nms_threshold_below_the_overlap_drops_the_weaker(run_layers):
    out = run_layers(layer(nms=0.02), **two_cells())
    np.testing.assert_array_equal(out["rois"], [[0, 16, 0, 32, 16]])


def test_delta_moves_by_the_anchor_width_and_clips(run_layers):
    """dx 0.5 moves the first box 8 pixels right: [8, 0, 24, 16]; the second box's x2 = 32
    and y2 = 16 stay inside the 20 x 40 image; a 2-pixel-high image clips y2 to 1."""
    out = run_layers(layer(), **two_cells(0.5))
    np.testing.assert_array_equal(out["rois"][1], [0, 8, 0, 24, 16])
    low = two_cells()
    low["info"] = np.array([[2.0, 40.0, 1.0]])
    out = run_layers(layer(min_size=1), **low)
    np.testing.assert_array_equal(out["rois"][:, 4], [1, 1])


def test_boxes_under_min_size_times_the_scale_go(run_layers):
    """Each box is 17 x 17 (+1 sizes): min_size 9 keeps them at image scale 1 (9), none at
    scale 2 (18): no ROI at all, as py-faster-rcnn gives."""
    feeds = two_cells()
    assert run_layers(layer(min_size=9), **feeds)["rois"].shape == (2, 5)
    feeds["info"] = np.array([[20.0, 40.0, 2.0]])
    assert run_layers(layer(min_size=9), **feeds)["rois"].shape == (0, 5)
