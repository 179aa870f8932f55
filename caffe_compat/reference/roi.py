"""ROIPooling (caffe-fast-rcnn's ``roi_pooling_layer.cpp``) and PSROIPooling (caffe-rfcn's
``psroi_pooling_layer.cu``) in float64, with the forks' float32 index arithmetic.

ROIPooling, per ROI ``[b, x1, y1, x2, y2]`` (MS-CNN's ``pad_ratio`` first widens it on each
side by that share of its size, ``shapes.roi.padded_rois``): the corners are ``round(v *
spatial_scale)`` (float32 product, C's round: halves away from zero), the ROI spans ``max(end -
start + 1, 1)`` cells, a bin is ``span / pooled`` (float32) and bin ``p`` covers ``[floor(p *
bin), ceil((p + 1) * bin))`` shifted by the start and clipped to the map; the top is the bin's
maximum, 0 for an empty bin.

PSROIPooling: corners ``round(v) * scale`` and ``(round(v) + 1) * scale`` (not rounded again),
size at least 0.1, bin ``size / group``, ``[floor(p * bin + start), ceil((p + 1) * bin + start))``
clipped; top ``(r, c, i, j)`` averages channel ``(c * group + i) * group + j`` over its bin (0
when empty).

Batched, never ROI by ROI: ROIPooling takes each bin's maximum from sparse tables of the map
(``table_max``: four lookups per bin); PSROIPooling turns every ROI's bins into masks over the
map's rows and columns and sums over them for a chunk of ROIs at a time (bounded scratch). The
backward sends each top diff to the argmax (ROIPooling) or spreads it evenly over the bin
(PSROIPooling); nothing goes to the ROIs.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.roi import padded_rois, psroi_settings, roi_pad_ratio, roi_pooling_settings
from ._base import Arrays, BackwardContext, Grads, LayerContext

SCRATCH = 1 << 22  # float64 values per chunk


def c_round(x: np.ndarray) -> np.ndarray:
    """C's round(): halves away from zero (numpy's rounds them to even)."""
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def _images(rois: np.ndarray, batch: int) -> np.ndarray:
    index = np.trunc(rois[:, 0]).astype(np.int64)  # Caffe casts the float to int
    if ((index < 0) | (index >= batch)).any():
        raise ValueError(f"a ROI names an image outside the batch of {batch} (Caffe CHECKs it)")
    return index


def roi_bins(rois: np.ndarray, pooled: tuple[int, int], scale: float, size: tuple[int, int]):
    """ROIPooling's clipped bin edges: (hstart, hend) as (R, pooled_h), (wstart, wend) as
    (R, pooled_w), all integers."""
    r = rois.astype(np.float32)
    corners = c_round(r[:, 1:5] * np.float32(scale)).astype(np.int64)
    sw, sh, ew, eh = corners.T
    edges = []
    for start, end, count, limit in ((sh, eh, pooled[0], size[0]), (sw, ew, pooled[1], size[1])):
        span = np.maximum(end - start + 1, 1).astype(np.float32)
        step = span / np.float32(count)
        p = np.arange(count, dtype=np.float32)
        low = np.floor(p[None, :] * step[:, None]).astype(np.int64) + start[:, None]
        high = np.ceil((p[None, :] + 1) * step[:, None]).astype(np.int64) + start[:, None]
        edges.append((np.clip(low, 0, limit), np.clip(high, 0, limit)))
    return edges


def psroi_bins(rois: np.ndarray, group: int, scale: float, size: tuple[int, int]):
    """PSROIPooling's clipped bin edges, as :func:`roi_bins`."""
    r = c_round(rois[:, 1:5].astype(np.float32)).astype(np.float64)
    scale64 = float(np.float32(scale))
    sw, sh = (r[:, 0] * scale64).astype(np.float32), (r[:, 1] * scale64).astype(np.float32)
    ew = ((r[:, 2] + 1.0) * scale64).astype(np.float32)
    eh = ((r[:, 3] + 1.0) * scale64).astype(np.float32)
    edges = []
    for start, end, limit in ((sh, eh, size[0]), (sw, ew, size[1])):
        extent = np.maximum(end.astype(np.float64) - start, 0.1).astype(np.float32)
        step = extent / np.float32(group)
        p = np.arange(group, dtype=np.float32)
        low = np.floor(p[None, :] * step[:, None] + start[:, None]).astype(np.int64)
        high = np.ceil((p[None, :] + 1) * step[:, None] + start[:, None]).astype(np.int64)
        edges.append((np.clip(low, 0, limit), np.clip(high, 0, limit)))
    return edges


def _masks(edges, length: int) -> np.ndarray:
    low, high = edges
    cells = np.arange(length)
    return (cells >= low[..., None]) & (cells < high[..., None])  # (R, bins, length)


def _chunks(rois: int, per_roi: int):
    step = max(1, SCRATCH // max(per_roi, 1))
    for start in range(0, rois, step):
        yield slice(start, min(start + step, rois))


@register("ROIPooling", "reference")
def _roi_pooling(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    x, rois = inputs
    rois = rois.reshape(rois.shape[0], 5)
    n, _, h, w = x.shape
    ph, pw, scale = roi_pooling_settings(node.param.roi_pooling_param)
    image = _images(rois, n)
    rois = padded_rois(rois, roi_pad_ratio(node.param.roi_pooling_param))
    rows, cols = roi_bins(rois, (ph, pw), scale, (h, w))
    return [table_max(x, image, rows, cols)]


def _levels(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """floor(log2(length)) of each bin (exact on integers), -1 for an empty one."""
    length = np.maximum(high - low, 0)
    _, exponent = np.frexp(np.maximum(length, 1))
    return np.where(length > 0, exponent - 1, -1)


def table_max(x: np.ndarray, image: np.ndarray, rows, cols) -> np.ndarray:
    """Every ROI bin's maximum (0 for an empty bin), as float64 (R, C, ph, pw), by sparse
    tables: at level (a, b) the table of an image holds the maximum of each 2^a x 2^b window,
    so a bin of L rows and M columns (2^a <= L < 2^(a+1), 2^b <= M < 2^(b+1)) is the maximum
    of the four windows at its corners. Levels are made one from another (a maximum of two
    shifted copies), one at a time: scratch two maps per image whatever the ROIs' sizes, and
    four lookups per bin (MS-CNN's 2000 ROIs on a 512 x 48 x 160 map: masked windows took
    about 0.3 s a ROI). Exact: a maximum of the same values."""
    count, c = len(image), x.shape[1]
    ph, pw = rows[0].shape[1], cols[0].shape[1]
    top = np.zeros((count, ph, pw, c))
    row_level, col_level = _levels(*rows), _levels(*cols)  # (R, ph), (R, pw)
    for n in np.unique(image):
        mine = np.flatnonzero(image == n)
        ra, cb = row_level[mine], col_level[mine]
        table_a = np.ascontiguousarray(x[n].transpose(1, 2, 0), dtype=np.float64)  # (H, W, C)
        for a in range(int(ra.max()) + 1):
            if a:  # rows y .. y + 2^a - 1
                half = 1 << (a - 1)
                table_a = np.maximum(table_a[:-half], table_a[half:])
            if not (ra == a).any():
                continue
            table = table_a
            for b in range(int(cb.max()) + 1):
                if b:  # columns x .. x + 2^b - 1
                    half = 1 << (b - 1)
                    table = np.maximum(table[:, :-half], table[:, half:])
                roi, i, j = np.nonzero((ra == a)[:, :, None] & (cb == b)[:, None, :])
                if not roi.size:
                    continue
                r = mine[roi]
                y0, y1 = rows[0][r, i], rows[1][r, i] - (1 << a)
                x0, x1 = cols[0][r, j], cols[1][r, j] - (1 << b)
                best = np.maximum(table[y0, x0], table[y0, x1])
                top[r, i, j] = np.maximum(best, np.maximum(table[y1, x0], table[y1, x1]))
    return np.ascontiguousarray(top.transpose(0, 3, 1, 2))


@register("PSROIPooling", "reference")
def _psroi_pooling(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    x, rois = inputs
    rois = rois.reshape(rois.shape[0], 5)
    n, c, h, w = x.shape
    dim, group, scale = psroi_settings(node.param.psroi_pooling_param)
    image = _images(rois, n)
    rows, cols = psroi_bins(rois, group, scale, (h, w))
    row_mask, col_mask = _masks(rows, h), _masks(cols, w)  # (R, g, H), (R, g, W)
    area = (rows[1] - rows[0])[:, :, None] * (cols[1] - cols[0])[:, None, :]  # (R, g, g)
    top = np.zeros((len(rois), dim, group, group))
    for part in _chunks(len(rois), c * h * w):
        feat = x[image[part]].reshape(-1, dim, group, group, h, w)  # channel (c, i, j)
        sums = np.einsum("rcijhw,rih,rjw->rcij", feat, row_mask[part], col_mask[part])
        top[part] = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        top = np.where(area[:, None] > 0, top / area[:, None], 0.0)
    return [top]


@register("ROIPooling", "reference_backward")
def _roi_pooling_backward(node: Node, inputs: Arrays, diffs: Arrays, ctx: BackwardContext) -> Grads:
    """Each top diff goes to the first maximum of its bin (Caffe keeps the first ``>``)."""
    x, rois = inputs
    rois = rois.reshape(rois.shape[0], 5)
    n, c, h, w = x.shape
    ph, pw, scale = roi_pooling_settings(node.param.roi_pooling_param)
    image = _images(rois, n)
    rois = padded_rois(rois, roi_pad_ratio(node.param.roi_pooling_param))
    rows, cols = roi_bins(rois, (ph, pw), scale, (h, w))
    mask = _masks(rows, h)[:, :, None, :, None] & _masks(cols, w)[:, None, :, None, :]
    grad = np.zeros_like(x, dtype=np.float64)
    for part in _chunks(len(rois), c * ph * pw * h * w):
        feat = x[image[part]][:, :, None, None]  # (r, C, 1, 1, H, W)
        masked = np.where(mask[part, None], feat, -np.inf).reshape(*feat.shape[:2], ph, pw, -1)
        first = masked.argmax(-1)  # the first maximum in row-major order, as Caffe's scan
        has = np.isfinite(masked.max(-1)) & mask[part].any(axis=(-1, -2))[:, None]
        r, ch, i, j = np.nonzero(has)
        flat = first[r, ch, i, j]
        np.add.at(grad, (image[part][r], ch, flat // w, flat % w), diffs[0][part][r, ch, i, j])
    return [grad, None], []


@register("PSROIPooling", "reference_backward")
def _psroi_pooling_backward(
    node: Node, inputs: Arrays, diffs: Arrays, ctx: BackwardContext
) -> Grads:
    x, rois = inputs
    rois = rois.reshape(rois.shape[0], 5)
    n, _, h, w = x.shape
    dim, group, scale = psroi_settings(node.param.psroi_pooling_param)
    image = _images(rois, n)
    rows, cols = psroi_bins(rois, group, scale, (h, w))
    area = (rows[1] - rows[0])[:, :, None] * (cols[1] - cols[0])[:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(area > 0, 1.0 / np.maximum(area, 1), 0.0)[:, None] * diffs[0]
    spread = np.einsum("rcij,rih,rjw->rcijhw", share, _masks(rows, h), _masks(cols, w))
    grad = np.zeros((n, dim, group, group, h, w))
    np.add.at(grad, image, spread)
    return [grad.reshape(x.shape), None], []
