"""ROIPooling and PSROIPooling in the float64 reference: values worked out by hand from the forks'
C++ (caffe-fast-rcnn's roi_pooling_layer.cpp, caffe-rfcn's psroi_pooling_layer.cu), then the
backwards against central differences."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat.errors import CaffeCompatError

PLANE = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)  # value = 4 * row + column


def roi(pooled_h: int, pooled_w: int, scale: float = 1.0, pad_ratio: float | None = None) -> str:
    pad = "" if pad_ratio is None else f" pad_ratio: {pad_ratio}"
    return (
        'layer { name: "p" type: "ROIPooling" bottom: "data" bottom: "rois" top: "p" '
        f"roi_pooling_param {{ pooled_h: {pooled_h} pooled_w: {pooled_w} "
        f"spatial_scale: {scale}{pad} }} }}"
    )


def psroi(dim: int, group: int, scale: float = 1.0) -> str:
    return (
        'layer { name: "p" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "p" '
        f"psroi_pooling_param {{ spatial_scale: {scale} output_dim: {dim} group_size: {group} }} }}"
    )


@pytest.mark.parametrize(
    "box, pooled, expected",
    [
        # the whole map in 2 x 2 bins of 2 x 2 cells: each bin's bottom-right value
        ([0, 0, 0, 3, 3], (2, 2), [[5, 7], [13, 15]]),
        # C's round: 0.5 -> 1 and 2.5 -> 3 (numpy's would give 0 and 2, maximum 10)
        ([0, 0.5, 0.5, 2.5, 2.5], (1, 1), [[15]]),
        # 3 cells in 2 bins: bin size 1.5, bins [0, 2) and [1, 3): they overlap
        ([0, 0, 0, 2, 0], (1, 2), [[1, 2]]),
        # x2 < x1: the span is forced to one cell
        ([0, 2, 1, 0, 1], (1, 1), [[6]]),
        # outside the map: every bin is empty, 0
        ([0, 10, 10, 12, 12], (2, 2), [[0, 0], [0, 0]]),
    ],
)
def test_roi_pooling_by_hand(run_layers, box, pooled, expected):
    out = run_layers(roi(*pooled), data=PLANE, rois=np.array([box], np.float64))["p"]
    np.testing.assert_array_equal(out[0, 0], expected)


@pytest.mark.parametrize(
    "box, ratio, scale, expected",
    [
        # MS-CNN's pad_ratio: pad = (1 - 1 + 1) * 0.5 = 0.5 on each side: [0.5, 0.5, 1.5, 1.5],
        # C's round -> cells 1 to 2: 2 x 2 bins of one cell each (without the pad: one cell, 5)
        ([0, 1, 1, 1, 1], 0.5, 1.0, [[5, 6], [9, 10]]),
        # pad (2 - 1 + 1) * 0.25 = 0.5: [0.5, 0.5, 2.5, 2.5] -> cells 1 to 3 (3 in 2 bins:
        # [1, 3) and [2, 4), overlapping)
        ([0, 1, 1, 2, 2], 0.25, 1.0, [[10, 11], [14, 15]]),
        # the pad in image pixels, before the scale: [0, 0, 8, 8] +- 4.5 = [-4.5, 12.5], times
        # 0.25 -> round(-1.125) = -1, round(3.125) = 3: the whole map in one clipped bin
        ([0, 0, 0, 8, 8], 0.5, 0.25, [[15]]),
    ],
)
def test_roi_pooling_pad_ratio_by_hand(run_layers, box, ratio, scale, expected):
    pooled = np.shape(expected)
    rois = np.array([box], np.float64)
    out = run_layers(roi(*pooled, scale=scale, pad_ratio=ratio), data=PLANE, rois=rois)["p"]
    np.testing.assert_array_equal(out[0, 0], expected)


def test_roi_pooling_scale_and_image_index(run_layers):
    """Corners scaled before rounding (8 * 0.25 = 2), the ROI reads the image it names."""
    data = np.concatenate([PLANE, PLANE + 100])
    rois = np.array([[1, 0, 0, 8, 8], [0, 4, 4, 12, 12]], np.float64)
    out = run_layers(roi(1, 1, 0.25), data=data, rois=rois)["p"]
    np.testing.assert_array_equal(out[:, 0, 0, 0], [110, 15])


def test_roi_naming_an_image_outside_the_batch_is_refused(run_layers):
    with pytest.raises(CaffeCompatError, match="outside the batch"):
        run_layers(roi(1, 1), data=PLANE, rois=np.array([[1, 0, 0, 1, 1]], np.float64))


def test_a_pad_ratio_that_is_not_a_number_is_refused(run_layers):
    with pytest.raises(CaffeCompatError, match="pad_ratio must be a finite number"):
        run_layers(roi(1, 1, pad_ratio=float("nan")), data=PLANE, rois=np.zeros((1, 5)))


def test_psroi_pooling_by_hand(run_layers):
    """Bin (i, j) of output channel c averages channel (c * 2 + i) * 2 + j of its bin."""
    data = np.concatenate([PLANE + 100 * k for k in range(4)], axis=1)
    out = run_layers(psroi(1, 2), data=data, rois=np.array([[0, 0, 0, 3, 3]], np.float64))["p"]
    np.testing.assert_allclose(out[0, 0], [[2.5, 104.5], [210.5, 312.5]])


def test_psroi_pooling_rounds_before_the_scale(run_layers):
    """R-FCN rounds the corners (1.5 -> 2), then scales: start 2 * 0.5 = 1, end (3 + 1) * 0.5
    = 2; one bin [1, 2) x [1, 2): the single value at (1, 1)."""
    out = run_layers(psroi(1, 1, 0.5), data=PLANE, rois=np.array([[0, 1.5, 1.5, 3, 3]]))["p"]
    np.testing.assert_array_equal(out.ravel(), [5])


def test_psroi_tiny_roi_is_at_least_a_tenth(run_layers):
    """A ROI of 0 cells after the scale still spans 0.1: floor/ceil give one cell."""
    rois = np.array([[0, 2, 2, -1, -1]], np.float64)  # end (-1 + 1) * 1 = 0 < start 2
    out = run_layers(psroi(1, 1), data=PLANE, rois=rois)["p"]
    np.testing.assert_array_equal(out.ravel(), [10])  # cell (2, 2)


def test_roi_pooling_backward(grad_check):
    rng = np.random.default_rng(0)
    data = rng.permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7).astype(np.float64) / 10
    rois = np.array([[0, 0, 0, 5, 4], [1, 1, 2, 6, 5], [1, 3, 3, 3, 3]], np.float64)
    grad_check(roi(2, 3), data=data, rois=rois, bottoms=[0], step=1e-3)


def test_psroi_pooling_backward(grad_check):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((2, 8, 5, 6))
    rois = np.array([[0, 0, 0, 5, 4], [1, 1, 2, 6, 5], [1, 3, 3, 3, 3]], np.float64)
    grad_check(psroi(2, 2), data=data, rois=rois, bottoms=[0])
