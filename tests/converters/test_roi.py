"""ROIPooling (caffe-fast-rcnn) and PSROIPooling (R-FCN): PyTorch, ONNX Runtime and the float64
reference against plain-loop numpy ports of the forks' forwards written here (ROIPooling's
``Forward_cpu``, PSROIPooling's CUDA kernel, one output cell at a time) and OpenCV 4, which runs
both types."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from caffe_compat.errors import CaffeCompatError
from caffe_compat.ir.load import load_net
from caffe_compat.shapes.roi import random_rois
from caffe_compat.verify.inputs import feeds_for, structured_inputs

F32 = np.float32


def c_round(v: float) -> int:
    return math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)


def roi_pool_loops(x, rois, ph, pw, scale, pad_ratio=0.0):
    """caffe-fast-rcnn's Forward_cpu, value by value (float32 products and bins), with
    MS-CNN's pad_ratio (the pads in float32, subtracted from or added to the corners)."""
    out = np.zeros((len(rois), x.shape[1], ph, pw), F32)
    h, w = x.shape[2:]
    for n, roi in enumerate(rois.astype(F32)):
        b = int(roi[0])
        pad_w = F32(F32(F32(roi[3] - roi[1]) + F32(1)) * F32(pad_ratio))
        pad_h = F32(F32(F32(roi[4] - roi[2]) + F32(1)) * F32(pad_ratio))
        padded = (
            F32(roi[1] - pad_w),
            F32(roi[2] - pad_h),
            F32(roi[3] + pad_w),
            F32(roi[4] + pad_h),
        )
        sw, sh, ew, eh = (c_round(float(F32(v * F32(scale)))) for v in padded)
        bin_h = F32(max(eh - sh + 1, 1)) / F32(ph)
        bin_w = F32(max(ew - sw + 1, 1)) / F32(pw)
        for c in range(x.shape[1]):
            for i in range(ph):
                for j in range(pw):
                    h0 = min(max(math.floor(F32(i) * bin_h) + sh, 0), h)
                    h1 = min(max(math.ceil(F32(i + 1) * bin_h) + sh, 0), h)
                    w0 = min(max(math.floor(F32(j) * bin_w) + sw, 0), w)
                    w1 = min(max(math.ceil(F32(j + 1) * bin_w) + sw, 0), w)
                    if h1 <= h0 or w1 <= w0:
                        continue
                    out[n, c, i, j] = x[b, c, h0:h1, w0:w1].max()
    return out


def psroi_pool_loops(x, rois, dim, group, scale):
    """R-FCN's PSROIPoolingForward kernel, one output cell at a time."""
    out = np.zeros((len(rois), dim, group, group), F32)
    h, w = x.shape[2:]
    s = F32(scale)
    for n, roi in enumerate(rois.astype(F32)):
        b = int(roi[0])
        x1, y1, x2, y2 = (F32(c_round(float(v))) for v in roi[1:])
        start_w, start_h = F32(x1 * s), F32(y1 * s)
        end_w, end_h = F32((float(x2) + 1.0) * s), F32((float(y2) + 1.0) * s)
        roi_w = F32(max(float(end_w) - float(start_w), 0.1))
        roi_h = F32(max(float(end_h) - float(start_h), 0.1))
        bin_h, bin_w = F32(roi_h / F32(group)), F32(roi_w / F32(group))
        for c in range(dim):
            for i in range(group):
                for j in range(group):
                    h0 = min(max(math.floor(F32(F32(i) * bin_h) + start_h), 0), h)
                    h1 = min(max(math.ceil(F32(F32(i + 1) * bin_h) + start_h), 0), h)
                    w0 = min(max(math.floor(F32(F32(j) * bin_w) + start_w), 0), w)
                    w1 = min(max(math.ceil(F32(F32(j + 1) * bin_w) + start_w), 0), w)
                    if h1 <= h0 or w1 <= w0:
                        continue
                    ch = (c * group + i) * group + j
                    out[n, c, i, j] = x[b, ch, h0:h1, w0:w1].sum() / ((h1 - h0) * (w1 - w0))
    return out


def net(layer: str, channels: int, rois: int = 6, h: int = 9, w: int = 12) -> str:
    return (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 '
        f"dim: {channels} dim: {h} dim: {w} }} }} }}\n"
        'layer { name: "rois" type: "Input" top: "rois" input_param { shape { '
        f"dim: {rois} dim: 5 }} }} }}\n" + layer
    )


def feeds(channels: int, image=(36, 48), h: int = 9, w: int = 12):
    """Image features and ROIs inside a 36 x 48 image (scale 1/4 reaches the 9 x 12 map),
    some past its edges, one single cell wide, one on a rounding half."""

    def make(n: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(n)
        rois = random_rois(n + 5, n, *image, rng)
        rois[0] = [n - 1, 40.0, 30.0, 60.0, 50.0]  # past the right and bottom edges
        rois[1] = [0, 2.0, 6.0, 10.0, 14.0]  # corners on halves after the scale
        return {"data": rng.standard_normal((n, channels, h, w)).astype(F32), "rois": rois}

    return make


@pytest.mark.parametrize("pooled, scale", [((3, 4), 0.25), ((2, 2), 0.25), ((6, 6), 0.125)])
def test_roi_pooling(layer_check, pooled, scale):
    layer = (
        'layer { name: "pool" type: "ROIPooling" bottom: "data" bottom: "rois" top: "pool" '
        f"roi_pooling_param {{ pooled_h: {pooled[0]} pooled_w: {pooled[1]} "
        f"spatial_scale: {scale} }} }}"
    )

    def expected(i, w):
        return {"pool": roi_pool_loops(i["data"], i["rois"], *pooled, scale)}

    layer_check(net(layer, 4), expected, feeds=feeds(4))


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_roi_pooling_pad_ratio(layer_check, ratio):
    """MS-CNN's context ROIs: each widened by ``pad_ratio`` of its size before pooling."""
    layer = (
        'layer { name: "pool" type: "ROIPooling" bottom: "data" bottom: "rois" top: "pool" '
        f"roi_pooling_param {{ pooled_h: 3 pooled_w: 4 spatial_scale: 0.25 pad_ratio: {ratio} }} }}"
    )

    def expected(i, w):
        return {"pool": roi_pool_loops(i["data"], i["rois"], 3, 4, 0.25, ratio)}

    # OpenCV's ROIPooling has no pad_ratio (the type's declared deviation): not a judge here
    layer_check(net(layer, 4), expected, feeds=feeds(4), opencv=False)


def test_roi_pooling_tables_match_the_gathered_windows_and_the_loops():
    """Inference (PyTorch without autograd, the float64 reference) takes each bin's maximum
    from sparse tables; autograd keeps the gathered windows. On bins of 1 to 16 cells (every table level), empty bins past the
    map, three images and many ties (ReLU zeros), both equal the fork's loops exactly."""
    import torch

    from caffe_compat.converters.torch.roi import ROIPooling
    from caffe_compat.reference.roi import roi_bins, table_max

    rng = np.random.default_rng(3)
    x = np.maximum(rng.integers(-3, 4, (3, 2, 23, 31)), 0).astype(F32)
    rois = random_rois(24, 3, 92, 124, rng)
    rois[2] = [1, 0, 0, 123, 91]  # the whole map: bins of up to 8 x 16 cells
    rois[3] = [2, 130, 100, 200, 150]  # wholly past the map: every bin empty
    rois[4] = [0, 50, 10, 51, 11]  # one cell
    want = roi_pool_loops(x, rois, 3, 2, 0.25)
    module = ROIPooling(3, 2, 0.25)
    with torch.no_grad():
        tables = module(torch.from_numpy(x), torch.from_numpy(rois)).numpy()
    windows = module(torch.from_numpy(x).requires_grad_(), torch.from_numpy(rois))
    np.testing.assert_array_equal(tables, want)
    np.testing.assert_array_equal(windows.detach().numpy(), want)
    rows, cols = roi_bins(rois, (3, 2), 0.25, (23, 31))  # the float64 reference's tables
    np.testing.assert_array_equal(table_max(x, rois[:, 0].astype(int), rows, cols), want)


@pytest.mark.parametrize("dim, group, scale", [(2, 3, 0.25), (3, 2, 0.5), (1, 7, 0.25)])
def test_psroi_pooling(layer_check, dim, group, scale):
    layer = (
        'layer { name: "ps" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "ps" '
        f"psroi_pooling_param {{ spatial_scale: {scale} output_dim: {dim} group_size: {group} }} }}"
    )

    def expected(i, w):
        return {"ps": psroi_pool_loops(i["data"], i["rois"], dim, group, scale)}

    layer_check(net(layer, dim * group * group), expected, feeds=feeds(dim * group * group))


def test_synthetic_rois_are_valid_boxes_of_the_image(tmp_path):
    """verify and synth feed a ROI input boxes inside the image input, naming its images."""
    layer = (
        'layer { name: "pool" type: "ROIPooling" bottom: "data" bottom: "rois" top: "pool" '
        "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.25 } }"
    )
    path = tmp_path / "net.prototxt"
    path.write_text(net(layer, 4, h=9, w=12))
    graph = load_net(path).graph
    makers = structured_inputs(graph)
    assert set(makers) == {"rois"}
    made = feeds_for(graph.inputs, 3, seed=1, makers=makers)["rois"]
    assert made.shape == (3, 5)
    assert set(made[:, 0]) <= {0.0, 1.0, 2.0}
    assert (made[:, 1] <= made[:, 3]).all() and (made[:, 2] <= made[:, 4]).all()
    assert made[:, 1:].min() >= 0 and made[:, [1, 3]].max() <= 11 and made[:, [2, 4]].max() <= 8


@pytest.mark.parametrize(
    "layer, message",
    [
        ('type: "ROIPooling" roi_pooling_param { pooled_h: 0 pooled_w: 2 }', "pooled_h"),
        (
            'type: "PSROIPooling" psroi_pooling_param { spatial_scale: 1 output_dim: 3 '
            "group_size: 2 }",
            "output_dim x group_size^2",
        ),
        ('type: "PSROIPooling" psroi_pooling_param { output_dim: 1 group_size: 2 }', "required"),
    ],
)
def test_bad_settings_fail_in_one_line(tmp_path, layer, message):
    path = tmp_path / "net.prototxt"
    path.write_text(net(f'layer {{ name: "p" {layer} bottom: "data" bottom: "rois" top: "p" }}', 4))
    with pytest.raises(CaffeCompatError, match=re.escape(message)) as info:
        load_net(path)
    assert 'layer "p"' in str(info.value) and "\n" not in str(info.value)
