"""The forks' value-moving layers in numpy, index for index as their C++ writes them.

ShuffleChannel (shuffle_channel_layer.cpp, Resize_cpu): output channel ``j * group + i`` is input
channel ``i * (C / group) + j``. Reorg (the YOLOv2 ports' reorg_cpu, darknet's, called with the
bottom's own sizes and ``forward = 0``): the output, read in the bottom's C x H x W order, takes
position (k, j, i) from the bottom read as C/s^2 x H*s x W*s at (k mod C', j*s + (k div C') div
s, i*s + (k div C') mod s), with C' = C / s^2; the top is that buffer as C*s^2 x H/s x W/s.
Tiling (the highway-driving fork's tiling_layer.cpp): ``top[c, y * t + ty, x * t + tx] =
bottom[c * t^2 + ty * t + tx, y, x]``, t = tile_dim (a depth-to-space).
Transpose (caffe_ocr): top axis i is bottom axis dim[i]. Reverse (caffe_ocr): the order along one
axis reversed. Im2col (BVLC's im2col_cpu): column channel ``(c * kh + i) * kw + j`` holds
``x[c, h * sh - ph + i * dh, w * sw - pw + j * dw]``, 0 outside the input. Each backward moves
the diffs back the same way (Im2col's adds the columns back, col2im). Flip (flip_layer.cpp):
``top[h, w] = bottom[H - 1 - h if flip_height else h, W - 1 - w if flip_width else w]``.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.rearrange import (
    flip_axes,
    im2col_geometry,
    reorg_stride,
    reverse_axis,
    tile_dim,
    transpose_axes,
)
from ._base import Arrays, BackwardContext, Grads, LayerContext


def tiled(x: np.ndarray, t: int) -> np.ndarray:
    """Tiling: ``top[c, y * t + ty, x * t + tx] = bottom[c * t^2 + ty * t + tx, y, x]``."""
    n, c, h, w = x.shape
    return (
        x.reshape(n, c // (t * t), t, t, h, w)
        .transpose(0, 1, 4, 2, 5, 3)
        .reshape(n, c // (t * t), h * t, w * t)
    )


@register("Tiling", "reference")
def _tiling(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return [tiled(inputs[0], tile_dim(node.param.tiling_param))]


@register("Tiling", "reference_backward")
def _tiling_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    """Each diff goes back to the one bottom value its top value came from."""
    t = tile_dim(node.param.tiling_param)
    g = top_diffs[0]
    n, c, h, w = g.shape
    back = g.reshape(n, c, h // t, t, w // t, t).transpose(0, 1, 3, 5, 2, 4)
    return [back.reshape(inputs[0].shape)], []


def shuffle(x: np.ndarray, group: int) -> np.ndarray:
    n, c = x.shape[:2]
    rest = x.shape[2:]
    return x.reshape(n, group, c // group, *rest).swapaxes(1, 2).reshape(x.shape)


@register("ShuffleChannel", "reference")
def _shuffle_channel(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return [shuffle(inputs[0], int(node.param.shuffle_channel_param.group))]


@register("ShuffleChannel", "reference_backward")
def _shuffle_channel_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    group = int(node.param.shuffle_channel_param.group)
    return [shuffle(top_diffs[0], inputs[0].shape[1] // group)], []


def darknet_reorg_indices(shape: tuple[int, ...], s: int) -> np.ndarray:
    """For each flat output position, the flat bottom position it copies (one item)."""
    c, h, w = shape[1:]
    cc = c // (s * s)
    k, j, i = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    offset = k // cc
    rows, cols = j * s + offset // s, i * s + offset % s
    return ((k % cc) * (h * s) + rows) * (w * s) + cols


@register("Reorg", "reference")
def _reorg(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    source = darknet_reorg_indices(x.shape, reorg_stride(node)).reshape(-1)
    flat = x.reshape(x.shape[0], -1)
    return [flat[:, source].reshape(ctx.out_shapes[0])]


@register("Reorg", "reference_backward")
def _reorg_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    (x,) = inputs
    source = darknet_reorg_indices(x.shape, reorg_stride(node)).reshape(-1)
    diff = np.zeros((x.shape[0], x[0].size))
    diff[:, source] = top_diffs[0].reshape(x.shape[0], -1)
    return [diff.reshape(x.shape)], []


@register("Transpose", "reference")
def _transpose(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    return [np.ascontiguousarray(np.transpose(x, transpose_axes(node, x.ndim)))]


@register("Transpose", "reference_backward")
def _transpose_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    axes = transpose_axes(node, inputs[0].ndim)
    return [np.transpose(top_diffs[0], np.argsort(axes))], []


@register("Reverse", "reference")
def _reverse(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    return [np.flip(x, axis=reverse_axis(node, x.ndim)).copy()]


@register("Reverse", "reference_backward")
def _reverse_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    return [np.flip(top_diffs[0], axis=reverse_axis(node, inputs[0].ndim)).copy()], []


def _im2col_taps(node: Node, shape: tuple[int, ...]):
    """(i, j, row slice, column slice) per kernel tap, into the zero-padded input."""
    geom = im2col_geometry(node)
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.stride, geom.dilation
    oh, ow = geom.output(tuple(shape[2:]))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            cols = slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)
            yield i, j, rows, cols


@register("Im2col", "reference")
def _im2col(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    ph, pw = im2col_geometry(node).pad
    padded = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
    n, c = x.shape[:2]
    taps = list(_im2col_taps(node, x.shape))
    out = np.empty((n, c, len(taps), *ctx.out_shapes[0][2:]))
    for t, (_, _, rows, cols) in enumerate(taps):
        out[:, :, t] = padded[:, :, rows, cols]
    return [out.reshape(ctx.out_shapes[0])]


@register("Im2col", "reference_backward")
def _im2col_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    (x,) = inputs
    ph, pw = im2col_geometry(node).pad
    n, c, h, w = x.shape
    taps = list(_im2col_taps(node, x.shape))
    g = top_diffs[0].reshape(n, c, len(taps), *top_diffs[0].shape[2:])
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for t, (_, _, rows, cols) in enumerate(taps):
        padded[:, :, rows, cols] += g[:, :, t]
    return [padded[:, :, ph : ph + h, pw : pw + w]], []


@register("Flip", "reference")
def _flip(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    return [np.flip(inputs[0], axis=flip_axes(node)).copy()]


@register("Flip", "reference_backward")
def _flip_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    return [np.flip(top_diffs[0], axis=flip_axes(node)).copy()], []
