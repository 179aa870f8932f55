"""Pooling as Caffe's CPU forward computes it (pooling_layer.cpp), one kernel tap at a time.

Output sizes come from the shared geometry (ceil rounding unless ``round_mode: FLOOR``, the last
window dropped when it would start in the padding). MAX starts from -FLT_MAX and takes a value
only when it is strictly greater, so padding never wins and the mask (an optional second top)
holds the first maximum's index ``h * W + w`` in scan order. AVE sums the window clipped to the
image and divides by its size clipped to the padded input, computed before clipping to the image.

Backward: MAX adds each top diff to the bottom element its mask names (a window that found
nothing above -FLT_MAX, wholly past the input, sends nothing: Caffe would write at index -1);
AVE spreads each top diff over the window clipped to the image, divided by the same divisor.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import register
from ..shapes.geometry import PoolGeometry, pool_geometry
from ._base import FLT_MAX, Arrays, BackwardContext, Grads, LayerContext

Pool = caffe_pb2.PoolingParameter


def _padded(x: np.ndarray, geom: PoolGeometry, fill: float) -> np.ndarray:
    """The input with ``fill`` around it, far enough that every window lies inside."""
    (top, left), (bottom, right) = geom.pad_begin, geom.pad_end
    return np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)], constant_values=fill)


def _taps(geom: PoolGeometry, padded: np.ndarray):
    """(i, j, view): each kernel offset in Caffe's scan order and the input it sees per window."""
    (oh, ow), (sh, sw) = geom.out, geom.stride
    for i, j in itertools.product(range(geom.kernel[0]), range(geom.kernel[1])):
        yield i, j, padded[:, :, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw]


def max_pool(x: np.ndarray, geom: PoolGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Values and Caffe's argmax mask (as float64, -1 where nothing beat -FLT_MAX)."""
    padded = _padded(x, geom, -np.inf)
    shape = (*x.shape[:2], *geom.out)
    top = np.full(shape, -FLT_MAX)
    mask = np.full(shape, -1.0)
    (oh, ow), (sh, sw), (ph, pw) = geom.out, geom.stride, geom.pad_begin
    width = x.shape[3]
    for i, j, view in _taps(geom, padded):
        better = view > top
        index = (np.arange(oh) * sh - ph + i)[:, None] * width + (np.arange(ow) * sw - pw + j)
        np.copyto(top, view, where=better)
        np.copyto(mask, np.broadcast_to(index.astype(np.float64), shape), where=better)
    return top, mask


def ave_pool(x: np.ndarray, geom: PoolGeometry) -> np.ndarray:
    padded = _padded(x, geom, 0.0)
    total = np.zeros((*x.shape[:2], *geom.out))
    for _, _, view in _taps(geom, padded):
        total += view
    rows, cols = (np.array(a.divisors(), dtype=np.float64) for a in geom.axes)
    return total / (rows[:, None] * cols[None, :])


def _check(node: Node) -> str | None:
    """STOCHASTIC pooling (Caffe's CPU forward does not implement it)"""
    if node.param.pooling_param.pool == Pool.STOCHASTIC:
        return "STOCHASTIC pooling: Caffe's CPU forward does not implement it"
    return None


@register("Pooling", "reference", check=_check)
def _pooling(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    geom = pool_geometry(node.param.pooling_param, x.shape[2], x.shape[3])
    if geom.method == Pool.MAX:
        top, mask = max_pool(x, geom)
        return [top, mask][: len(node.outputs)]
    return [ave_pool(x, geom)]


def max_pool_backward(g: np.ndarray, mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    n, c, h, w = shape
    diff = np.zeros((n * c, h * w))
    index = mask.reshape(n * c, -1).astype(np.int64)
    rows = np.broadcast_to(np.arange(n * c)[:, None], index.shape)
    found = index >= 0
    np.add.at(diff, (rows[found], index[found]), g.reshape(n * c, -1)[found])
    return diff.reshape(shape)


def ave_pool_backward(g: np.ndarray, geom: PoolGeometry, shape: tuple[int, ...]) -> np.ndarray:
    rows, cols = (np.array(a.divisors(), dtype=np.float64) for a in geom.axes)
    share = g / (rows[:, None] * cols[None, :])
    (top, left), (bottom, right) = geom.pad_begin, geom.pad_end
    padded = np.zeros((*shape[:2], shape[2] + top + bottom, shape[3] + left + right))
    (oh, ow), (sh, sw) = geom.out, geom.stride
    for i, j in itertools.product(range(geom.kernel[0]), range(geom.kernel[1])):
        padded[:, :, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw] += share
    return padded[:, :, top : top + shape[2], left : left + shape[3]]


@register("Pooling", "reference_backward")
def _pooling_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    (x,), g = inputs, top_diffs[0]
    geom = pool_geometry(node.param.pooling_param, x.shape[2], x.shape[3])
    if geom.method == Pool.MAX:
        _, mask = max_pool(x, geom)
        return [max_pool_backward(g, mask, x.shape)], []
    return [ave_pool_backward(g, geom, x.shape)], []
