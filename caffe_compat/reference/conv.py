"""Convolution and Deconvolution as Caffe computes them: im2col, then one GEMM per group
(base_conv_layer.cpp, im2col.cpp), for any number of spatial axes and any channel ``axis``.

The axes before ``axis`` are Caffe's "num" (they are flattened and convolved independently), the
axes after it are spatial. Deconvolution is the transpose: one GEMM per group into columns,
then col2im adds every kernel tap into the (padded) output, which is cropped by ``pad``.
Python loops run over kernel taps only, never over pixels.

Backward: each layer's backward-data pass is the other layer's forward (a convolution's bottom
diff is a deconvolution of its top diff with the same weight, and back), and the weight diff is
one GEMM per group between the bottom's columns and the top diff (Caffe's ``weight_cpu_gemm``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..ir.graph import Node
from ..registry import register
from ..shapes.conv import column_items, column_rows, deconv_rows
from ..shapes.geometry import ConvGeometry, canonical_axis, conv_geometry
from ._base import Arrays, BackwardContext, Grads, LayerContext, weight_rows


def im2col(x: np.ndarray, geom: ConvGeometry, out: tuple[int, ...]) -> np.ndarray:
    """(n, C, *spatial) -> (C, *kernel, n, *out): every receptive field as one column."""
    spatial = tuple(range(2, x.ndim))
    if any(geom.pad):
        x = np.pad(x, [(0, 0), (0, 0), *((p, p) for p in geom.pad)])
    extent = tuple(d * (k - 1) + 1 for k, d in zip(geom.kernel, geom.dilation))
    windows = sliding_window_view(x, extent, axis=spatial)  # (n, C, *positions, *extent)
    pick = (
        slice(None),
        slice(None),
        *(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, geom.stride)),
        *(slice(None, None, d) for d in geom.dilation),
    )
    windows = windows[pick]  # (n, C, *out, *kernel)
    ns = len(spatial)
    order = (1, *range(2 + ns, 2 + 2 * ns), 0, *range(2, 2 + ns))
    return np.ascontiguousarray(windows.transpose(order))


def convolve(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geom: ConvGeometry, group: int
) -> np.ndarray:
    """(n, C, *spatial) -> (n, O, *out): ``weight`` is (O, C / group, *kernel); the columns
    are built COLUMN_SLAB values at a time (``column_rows`` output rows per GEMM, of
    ``column_items`` items where one row of all of them is more)."""
    n, channels = x.shape[:2]
    out = geom.output(x.shape[2:])
    items = column_items(channels, geom.kernel, n, out)
    if items < n:  # one output row of every item is more than a slab: a few items at a time
        return np.concatenate(
            [convolve(x[i : i + items], weight, bias, geom, group) for i in range(0, n, items)]
        )
    rows = column_rows(channels, geom.kernel, n, out)
    if not out or rows >= out[0]:
        return _convolve(x, weight, bias, geom, group, out)
    if any(geom.pad):
        x = np.pad(x, [(0, 0), (0, 0), *((p, p) for p in geom.pad)])
        geom = dataclasses.replace(geom, pad=(0,) * len(geom.pad))
    stride, reach = geom.stride[0], geom.dilation[0] * (geom.kernel[0] - 1) + 1
    y = np.empty((n, weight.shape[0], *out), np.result_type(x, np.float64))
    for first in range(0, out[0], rows):
        last = min(out[0], first + rows)
        part = x[:, :, first * stride : (last - 1) * stride + reach]
        y[:, :, first:last] = _convolve(part, weight, bias, geom, group, (last - first, *out[1:]))
    return y


def _convolve(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geom: ConvGeometry,
    group: int,
    out: tuple[int, ...],
) -> np.ndarray:
    """One GEMM per group over every column of ``x`` (its output ``out``)."""
    n, channels = x.shape[:2]
    n_out, taps, length = weight.shape[0], math.prod(geom.kernel), n * math.prod(out)
    cols = im2col(x, geom, out).reshape(group, channels // group * taps, length)
    w = weight.reshape(group, n_out // group, channels // group * taps)
    y = np.empty((group, n_out // group, length), np.result_type(cols, np.float64))
    for rows, slab in weight_rows(w, 1):  # one GEMM per group: (group, O / group, n * out)
        y[:, rows] = np.matmul(slab, cols)
    y = y.reshape(n_out, n, -1)
    del cols
    if bias is not None:
        y += bias[:, None, None]
    return np.ascontiguousarray(y.transpose(1, 0, 2)).reshape(n, n_out, *out)


def deconvolve(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geom: ConvGeometry, group: int
) -> np.ndarray:
    """(n, C, *spatial) -> (n, O, *out): ``weight`` is (C, O / group, *kernel), as Caffe stores
    it; the forward pass is the backward-data pass of a convolution with that weight."""
    y = _col2im(x, weight, bias, geom, group)
    crop = tuple(slice(p, f - p) for p, f in zip(geom.pad, y.shape[2:]))
    return np.ascontiguousarray(y[(slice(None), slice(None), *crop)].swapaxes(0, 1))


def _col2im(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geom: ConvGeometry, group: int
) -> np.ndarray:
    """The deconvolution before ``pad`` is cropped, channels first: (O, n, *padded out). The
    columns of ``deconv_rows`` input rows are made at a time (one GEMM per group each) and
    added into the output where their taps land: col2im's sum is the same, its scratch
    bounded (a 4 x 4 upsampling of 512 channels over a 1344-pixel detector's map: 3.7 GiB of
    columns at once)."""
    n, channels = x.shape[:2]
    spatial = x.shape[2:]
    taps = math.prod(geom.kernel)
    per_group_out = weight.shape[1]
    w = weight.reshape(group, channels // group, per_group_out * taps).transpose(0, 2, 1)
    full = tuple((size - 1) * s + d * (k - 1) + 1 for size, k, s, d in _axes(spatial, geom))
    y = np.zeros((group * per_group_out, n, *full))
    rows = deconv_rows(group * per_group_out, geom.kernel, n, spatial) if spatial else 1
    for first in range(0, spatial[0] if spatial else 1, rows):
        part = x[:, :, first : first + rows] if spatial else x
        here = part.shape[2:]
        data = part.reshape(n, group, channels // group, math.prod(here)).transpose(1, 2, 0, 3)
        data = data.reshape(group, channels // group, n * math.prod(here))
        cols = np.matmul(w, data)  # one GEMM per group
        cols = cols.reshape(group * per_group_out, *geom.kernel, n, *here)
        for tap in itertools.product(*(range(k) for k in geom.kernel)):  # one tap at a time
            where = tuple(
                slice(t * d + start * s, t * d + start * s + (size - 1) * s + 1, s)
                for start, t, (size, _, s, d) in zip(
                    (first,) + (0,) * (len(here) - 1), tap, _axes(here, geom)
                )
            )
            y[(slice(None), slice(None), *where)] += cols[(slice(None), *tap)]
        del cols
    if bias is not None:
        y += bias.reshape((-1,) + (1,) * (len(spatial) + 1))
    return y


def _axes(spatial: tuple[int, ...], geom: ConvGeometry) -> list[tuple[int, int, int, int]]:
    return list(zip(spatial, geom.kernel, geom.stride, geom.dilation))


def _run(node: Node, inputs: Arrays, ctx: LayerContext, transposed: bool) -> Arrays:
    p = node.param.convolution_param
    weight = ctx.blobs[0]
    bias = ctx.blobs[1] if p.bias_term else None
    group = int(p.group)
    tops = []
    for x in inputs:  # several bottoms share the weights, one top each
        axis = canonical_axis(int(p.axis), x.ndim)
        outer, spatial = x.shape[:axis], x.shape[axis + 1 :]
        geom = conv_geometry(p, len(spatial))
        flat = x.reshape(math.prod(outer), x.shape[axis], *spatial)
        y = (deconvolve if transposed else convolve)(flat, weight, bias, geom, group)
        tops.append(y.reshape(*outer, *y.shape[1:]))
    return tops


@register("Convolution", "reference")
def _convolution(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return _run(node, inputs, ctx, transposed=False)


@register("Deconvolution", "reference")
def _deconvolution(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return _run(node, inputs, ctx, transposed=True)


def _weight_diff(data: np.ndarray, diff: np.ndarray, geom: ConvGeometry, group: int) -> np.ndarray:
    """sum over items and positions of diff x columns(data), per group: (group, D / group, C /
    group * taps), where ``data`` (n, C, *spatial) is read in windows that give ``diff``'s
    (n, D, *out) positions."""
    n, channels = data.shape[:2]
    out = diff.shape[2:]
    taps, length = math.prod(geom.kernel), math.prod(out)
    cols = im2col(data, geom, out).reshape(group, channels // group * taps, n * length)
    d = diff.shape[1]
    rows = diff.reshape(n, group, d // group, length).transpose(1, 2, 0, 3)
    return np.matmul(rows.reshape(group, d // group, n * length), cols.transpose(0, 2, 1))


def _conv_data_diff(
    diff: np.ndarray, weight: np.ndarray, geom: ConvGeometry, group: int, spatial: tuple[int, ...]
) -> np.ndarray:
    """A convolution's bottom diff (n, C, *spatial): its top diff scattered back through every
    window (col2im), the padding cut off, zeros where no window reached (the last rows and
    columns a stride can skip)."""
    full = _col2im(diff, weight, None, geom, group)  # (C, n, *padded extent)
    out = np.zeros((full.shape[0], full.shape[1], *spatial))
    keep = tuple(
        slice(0, min(size, f - p)) for size, f, p in zip(spatial, full.shape[2:], geom.pad)
    )
    take = tuple(slice(p, p + k.stop) for p, k in zip(geom.pad, keep))
    out[(slice(None), slice(None), *keep)] = full[(slice(None), slice(None), *take)]
    return out.swapaxes(0, 1)


def _run_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext, transposed: bool
) -> Grads:
    p = node.param.convolution_param
    weight = ctx.blobs[0]
    group = int(p.group)
    weight_diff = np.zeros(weight.shape)
    bias_diff = np.zeros(weight.shape[1] * group if transposed else weight.shape[0])
    grads = []
    for x, g in zip(inputs, top_diffs):
        axis = canonical_axis(int(p.axis), x.ndim)
        outer, spatial = x.shape[:axis], x.shape[axis + 1 :]
        geom = conv_geometry(p, len(spatial))
        flat = x.reshape(math.prod(outer), x.shape[axis], *spatial)
        diff = g.reshape(flat.shape[0], g.shape[axis], *g.shape[axis + 1 :])
        if transposed:  # y = deconv(x): x reads y's windows
            weight_diff += _weight_diff(diff, flat, geom, group).reshape(weight.shape)
            bottom = convolve(diff, weight, None, geom, group)
        else:
            weight_diff += _weight_diff(flat, diff, geom, group).reshape(weight.shape)
            bottom = _conv_data_diff(diff, weight, geom, group, spatial)
        bias_diff += diff.sum(axis=(0, *range(2, diff.ndim)))
        grads.append(bottom.reshape(x.shape))
    params = [weight_diff, bias_diff] if p.bias_term else [weight_diff]
    return grads, params


@register("Convolution", "reference_backward")
def _convolution_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    return _run_backward(node, inputs, top_diffs, ctx, transposed=False)


@register("Deconvolution", "reference_backward")
def _deconvolution_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    return _run_backward(node, inputs, top_diffs, ctx, transposed=True)
