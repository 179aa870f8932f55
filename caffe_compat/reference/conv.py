"""Convolution and Deconvolution as Caffe computes them: im2col, then one GEMM per group
(base_conv_layer.cpp, im2col.cpp), for any number of spatial axes and any channel ``axis``.

The axes before ``axis`` are Caffe's "num" (they are flattened and convolved independently), the
axes after it are spatial. Deconvolution is the transpose: one GEMM per group into columns,
then col2im adds every kernel tap into the (padded) output, which is cropped by ``pad``.
Python loops run over kernel taps only, never over pixels.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..ir.graph import Node
from ..registry import register
from ..shapes.geometry import ConvGeometry, canonical_axis, conv_geometry
from ._base import LayerContext

Arrays = list[np.ndarray]


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
    """(n, C, *spatial) -> (n, O, *out): ``weight`` is (O, C / group, *kernel)."""
    n, channels = x.shape[:2]
    out = geom.output(x.shape[2:])
    n_out, taps, length = weight.shape[0], math.prod(geom.kernel), n * math.prod(out)
    cols = im2col(x, geom, out).reshape(group, channels // group * taps, length)
    w = weight.reshape(group, n_out // group, channels // group * taps)
    y = np.matmul(w, cols).reshape(n_out, n, -1)  # one GEMM per group: (group, O / group, n * out)
    del cols
    if bias is not None:
        y += bias[:, None, None]
    return np.ascontiguousarray(y.transpose(1, 0, 2)).reshape(n, n_out, *out)


def deconvolve(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geom: ConvGeometry, group: int
) -> np.ndarray:
    """(n, C, *spatial) -> (n, O, *out): ``weight`` is (C, O / group, *kernel), as Caffe stores
    it; the forward pass is the backward-data pass of a convolution with that weight."""
    n, channels = x.shape[:2]
    spatial = x.shape[2:]
    taps = math.prod(geom.kernel)
    per_group_out = weight.shape[1]
    w = weight.reshape(group, channels // group, per_group_out * taps)
    data = x.reshape(n, group, channels // group, math.prod(spatial)).transpose(1, 2, 0, 3)
    data = data.reshape(group, channels // group, n * math.prod(spatial))
    cols = np.matmul(w.transpose(0, 2, 1), data)  # one GEMM per group
    cols = cols.reshape(group * per_group_out, *geom.kernel, n, *spatial)
    full = tuple((size - 1) * s + d * (k - 1) + 1 for size, k, s, d in _axes(spatial, geom))
    y = np.zeros((group * per_group_out, n, *full))
    for tap in itertools.product(*(range(k) for k in geom.kernel)):  # col2im, one tap at a time
        where = tuple(
            slice(t * d, t * d + (size - 1) * s + 1, s)
            for t, (size, _, s, d) in zip(tap, _axes(spatial, geom))
        )
        y[(slice(None), slice(None), *where)] += cols[(slice(None), *tap)]
    del cols
    if bias is not None:
        y += bias.reshape((-1,) + (1,) * (len(spatial) + 1))
    crop = tuple(slice(p, f - p) for p, f in zip(geom.pad, full))
    return np.ascontiguousarray(y[(slice(None), slice(None), *crop)].swapaxes(0, 1))


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
