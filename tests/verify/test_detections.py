"""DetectionOutput rows compare as sets: tied rows pair up, borderline rows present on one side
only are excused (named in the note), any other unpaired row fails; degenerate coordinates
(1e18, float32's inf) compare equal without loosening the other columns."""

from __future__ import annotations

import numpy as np

from caffe_compat.proto import caffe_pb2
from caffe_compat.shapes.detection import detection_settings
from caffe_compat.verify.compare import Tolerance, compare
from caffe_compat.verify.detections import (
    align_detections,
    align_row_sets,
    canonical_detections,
)


def settings(confidence=0.25, nms=0.45, keep_top_k=10, top_k=-1):
    param = caffe_pb2.DetectionOutputParameter(num_classes=3, keep_top_k=keep_top_k)
    param.confidence_threshold = confidence
    param.nms_param.nms_threshold = nms
    if top_k > 0:
        param.nms_param.top_k = top_k
    return detection_settings(param)


A = [0, 1, 0.9, 0.1, 0.1, 0.3, 0.3]
B = [0, 1, 0.9, 0.5, 0.5, 0.7, 0.7]  # tied with A's score
C = [0, 2, 0.6, 0.2, 0.2, 0.6, 0.6]


def test_tied_rows_pair_with_their_own_partner_whatever_the_order():
    ours = np.array([B, A, C], np.float32)
    reference = np.array([A, B, C]) + np.array([0, 0, 1e-6, 0, 0, 0, 0])
    mine, theirs, note = align_detections(ours, reference, settings())
    assert note == "" and mine.shape == theirs.shape == (3, 7)
    assert np.abs(mine - theirs).max() < 1e-5


def test_a_row_at_the_confidence_threshold_on_one_side_only_is_excused():
    edge = [0, 2, 0.2500003, 0.6, 0.6, 0.9, 0.9]
    mine, theirs, note = align_detections(np.array([A, C, edge]), np.array([A, C]), settings())
    assert mine.shape == theirs.shape == (2, 7)
    assert note == "borderline detections excused: 1 x score at confidence_threshold"


def test_any_other_unpaired_row_fails_and_is_named():
    extra = [0, 2, 0.8, 0.6, 0.6, 0.9, 0.9]  # far from every threshold
    mine, theirs, note = align_detections(np.array([A, C, extra]), np.array([A, C]), settings())
    assert mine.shape != theirs.shape and "has no partner" in note and "0.8" in note
    row = compare("det", "det", mine, theirs, "torch-cpu", "float64", Tolerance())
    assert not row.passed
    mine, theirs, note = align_detections(np.array([A, C, extra]), np.array([A, C]))
    assert mine.shape != theirs.shape  # without settings nothing is excused


def test_a_box_whose_overlap_sits_at_the_nms_threshold_is_excused():
    # Boxes 0..1 and 0.1225..1.1225 wide in x, full height: IoU = 0.8775 / 1.1225 = 0.78174
    first = [0, 1, 0.9, 0.0, 0.0, 1.0, 1.0]
    second = [0, 1, 0.7, 0.1225, 0.0, 1.1225, 1.0]
    nms = 0.8775 / 1.1225
    _, _, note = align_detections(
        np.array([first, second]), np.array([first]), settings(nms=nms + 2e-4)
    )
    assert note == "borderline detections excused: 1 x overlap at nms_threshold"
    _, _, note = align_detections(np.array([first, second]), np.array([first]), settings(nms=0.3))
    assert "has no partner" in note


def test_scores_at_the_keep_top_k_cut_are_excused():
    rows = [[0, 1, 0.9 - 0.1 * i, 0.1 * i, 0, 0.1 * i + 0.05, 0.5] for i in range(3)]
    other = [0, 2, 0.7, 0.8, 0.8, 0.9, 0.9]  # tied with the last kept score
    _, _, note = align_detections(
        np.array(rows), np.array([*rows[:2], other]), settings(keep_top_k=3)
    )
    assert note.count("keep_top_k") == 1 and "2 x score at the keep_top_k cut" in note


def test_degenerate_coordinates_compare_equal_without_loosening_scores():
    huge = [0, 1, 0.5, -1e18, -1e18, 1e18, 1e18]
    overflowed = [0, 1, 0.5, -np.inf, -np.inf, np.inf, np.inf]
    mine, theirs, note = align_detections(np.array([overflowed, A]), np.array([huge, A]))
    assert note == "" and np.array_equal(mine, theirs)
    assert canonical_detections(np.array([huge]))[0, 3:].tolist() == [-1, -1, 2, 2]
    off = np.array([huge, A]) + np.array([0, 0, 1e-3, 0, 0, 0, 0])
    mine, theirs, _ = align_detections(off, np.array([huge, A]))
    row = compare("det", "det", mine, theirs, "torch-cpu", "float64", Tolerance())
    assert row.limit <= 2e-4 and not row.passed  # a score 1e-3 off still fails


def test_proposal_rows_tied_in_float32_pair_up():
    """ROIs whose scores tie at float32's 1.0 come in another order than the float64 judge's:
    they pair up (duplicates each take one partner) and the note counts them."""
    ref = np.array(
        [[0, 1, 2, 30, 40], [0, 5, 5, 9, 9], [0, 5, 5, 9, 9], [0, 50, 60, 70, 80.0]], np.float64
    )
    ours = ref[[3, 1, 0, 2]] + 1e-6
    mine, _, note = align_row_sets(ours.astype(np.float32), ref)
    np.testing.assert_allclose(mine, ref, atol=1e-5)
    assert "rows compared as a set" in note and "of 4" in note
    same, _, none = align_row_sets(ref.astype(np.float32), ref)
    assert none == "" and same.shape == ref.shape


def test_a_proposal_row_that_is_not_there_still_fails():
    ref = np.array([[0, 1, 2, 30, 40], [0, 5, 5, 9, 9], [0, 50, 60, 70, 80.0]])
    ours = ref[[2, 0, 1]].copy()
    ours[0, 3] = 99.0  # one box moved: no permutation makes the sets equal
    mine, theirs, _ = align_row_sets(ours, ref)
    row = compare("rois", "rois", mine, theirs, "onnx", "float64", Tolerance())
    assert not row.passed
