"""The forks' Upsample and Interp in float64, transcribed from their C++ (docs/forks.md).

caffe-segnet's upsample_layer.cpp zeroes the top and writes ``top[mask[i]] = bottom[i]`` plane
by plane in scan order, so where two mask entries name one position the later one stays; a mask
index past the top's plane is the fork's LOG(FATAL) (a NetDefinitionError naming the layer here;
PyTorch and ONNX drop such values); a negative one (a window wholly in the padding) is
dropped. The YOLOv3 ports' Upsample repeats each value ``scale`` times along both axes. Interp
(interp.cpp, caffe_cpu_interp2) crops ``-pad_beg`` / ``-pad_end`` pixels, copies when the size
is unchanged, and otherwise samples the align-corners grid: ``r = (in - 1) / (out - 1)`` and
``r * o`` in float, the integer part and the next pixel (none past the last), weighted by the
fraction. Backward: unpooling sends each top diff back to its mask's bottom, nearest sums each
block, Interp spreads each top diff over its four taps.
"""

from __future__ import annotations

import numpy as np

from ..errors import NetDefinitionError
from ..ir.graph import Node
from ..registry import register
from ..shapes.resize import nearest_scale, unpools
from ._base import Arrays, BackwardContext, Grads, LayerContext


def _unpool_targets(node: Node, mask: np.ndarray, plane: int) -> np.ndarray:
    index = mask.astype(np.int64).reshape(mask.shape[0] * mask.shape[1], -1)
    if index.size and index.max() >= plane:
        raise NetDefinitionError(
            f"the mask names position {int(index.max())} of a {plane}-value top plane, where "
            "caffe-segnet stops (upsample top index out of range): the size does not match the "
            "pooling layer that wrote the mask",
            layer=node.name,
            layer_type=node.type,
        )
    return index


@register("Upsample", "reference")
def _upsample(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    x = inputs[0]
    n, c, h, w = ctx.out_shapes[0]
    if not unpools(node):
        s = nearest_scale(node)
        return [np.repeat(np.repeat(x, s, axis=2), s, axis=3)]
    index = _unpool_targets(node, inputs[1], h * w)
    values = x.reshape(n * c, -1)
    rows = np.broadcast_to(np.arange(n * c)[:, None], index.shape)
    keep = index >= 0
    flat = (rows * (h * w) + index)[keep]
    vals = values[keep]
    # The last write to a position stays: keep each position's last occurrence in scan order.
    last = len(flat) - 1 - np.unique(flat[::-1], return_index=True)[1]
    top = np.zeros(n * c * h * w)
    top[flat[last]] = vals[last]
    return [top.reshape(n, c, h, w)]


INTERP_SLAB = 2**22  # output values per slab of rows (32 MiB in float64)


def interp_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the source index, the next one's offset (0 at the last) and the
    weight of the next, computed in float as caffe_cpu_interp2 does."""
    ratio = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0)
    real = ratio * np.arange(size_out, dtype=np.float32)
    base = real.astype(np.int64)
    step = (base < size_in - 1).astype(np.int64)
    return base, step, real.astype(np.float64) - base


def _cropped(node: Node, x: np.ndarray) -> np.ndarray:
    p = node.param.interp_param
    begin = -int(p.pad_beg)
    h, w = x.shape[2] + p.pad_beg + p.pad_end, x.shape[3] + p.pad_beg + p.pad_end
    return x[:, :, begin : begin + h, begin : begin + w]


@register("Interp", "reference")
def _interp(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    x = _cropped(node, inputs[0])
    out_h, out_w = ctx.out_shapes[0][2:]
    if x.shape[2:] == (out_h, out_w):
        return [x.copy()]
    h0, hs, hl = interp_taps(x.shape[2], out_h)
    w0, ws, wl = interp_taps(x.shape[3], out_w)
    # Each input row interpolated along the width first, as caffe_cpu_interp2 weighs the two
    # rows' width-interpolated values; then the rows, a slab of output rows at a time, so a
    # large top (ICNet's 19 x 1025 x 2049) needs no full-size temporaries beside it.
    across = (1 - wl) * x[:, :, :, w0] + wl * x[:, :, :, w0 + ws]
    top = np.empty((*x.shape[:2], out_h, out_w))
    rows = max(1, INTERP_SLAB // max(1, top[:, :, :1].size))
    for start in range(0, out_h, rows):
        at = slice(start, start + rows)
        weight = hl[at, None]
        top[:, :, at] = (1 - weight) * across[:, :, h0[at]] + weight * across[:, :, h0[at] + hs[at]]
    return [top]


@register("Upsample", "reference_backward")
def _upsample_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    x, g = inputs[0], top_diffs[0]
    n, c, h, w = g.shape
    if not unpools(node):
        s = nearest_scale(node)
        return [g.reshape(n, c, x.shape[2], s, x.shape[3], s).sum(axis=(3, 5))], []
    index = _unpool_targets(node, inputs[1], h * w)
    planes = g.reshape(n * c, -1)
    picked = np.take_along_axis(planes, np.maximum(index, 0), axis=1)
    return [np.where(index >= 0, picked, 0.0).reshape(x.shape), *[None] * (len(inputs) - 1)], []


@register("Interp", "reference_backward")
def _interp_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    x, g = inputs[0], top_diffs[0]
    p = node.param.interp_param
    begin = -int(p.pad_beg)
    cropped = _cropped(node, x)
    h_in, w_in = cropped.shape[2:]
    diff = np.zeros(x.shape)
    inner = diff[:, :, begin : begin + h_in, begin : begin + w_in]
    if (h_in, w_in) == g.shape[2:]:
        inner += g
    else:
        h0, hs, hl = interp_taps(h_in, g.shape[2])
        w0, ws, wl = interp_taps(w_in, g.shape[3])
        rows = np.zeros((g.shape[2], h_in))  # row weights: top diff rows -> input rows
        np.add.at(rows, (np.arange(g.shape[2]), h0), 1 - hl)
        np.add.at(rows, (np.arange(g.shape[2]), h0 + hs), hl)
        cols = np.zeros((g.shape[3], w_in))
        np.add.at(cols, (np.arange(g.shape[3]), w0), 1 - wl)
        np.add.at(cols, (np.arange(g.shape[3]), w0 + ws), wl)
        inner += np.einsum("ncij,ia,jb->ncab", g, rows, cols)
    extra = [None] * (len(inputs) - 1)
    return [diff, *extra], []
