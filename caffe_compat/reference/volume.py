"""C3D's Pooling3D in float64, transcribed from ``pool3d_layer.cpp`` (C3D v1.0 and v1.1).

Forward: every window is clipped to the input; MAX starts from -FLT_MAX, AVE sums and divides by
the window clipped to ``size + pad`` (pad on H and W only). Backward: AVE spreads each top diff
evenly over its window by the same divisor; MAX gives the top diff to every element of the window
equal to the window's maximum (C3D compares values, it keeps no argmax: ties all receive it).
Python loops run over the kernel's taps, never over elements.

Convolution3D is Convolution's reference on the rewritten node (caffe_compat.shapes.volume), one
clip at a time as Convolution3DLayer unfolds them (its vol2col buffer holds one clip): a clip's
columns in float64 are the scratch its ``workspace`` fact declares. Its backward is
Convolution's on the same rewrite, the bias diff shaped as C3D's bias blob.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..ir.graph import Node
from ..proto import caffe_pb2
from ..registry import builtin_entry, register
from ..shapes.geometry import conv_geometry
from ..shapes.volume import Pool3dGeometry, conv3d_as_convolution, pool3d_geometry
from ._base import FLT_MAX, Arrays, BackwardContext, Grads, LayerContext
from .conv import convolve

MAX = caffe_pb2.Pooling3DParameter.MAX


def _padded(x: np.ndarray, geom: Pool3dGeometry, fill: float) -> np.ndarray:
    pads = [(0, 0), (0, 0), *zip(geom.pad, geom.pad_end)]
    return np.pad(x, pads, constant_values=fill)


def _taps(geom: Pool3dGeometry):
    """Per kernel tap: the slice of the padded input each output position reads there."""
    kd, kh, kw = geom.kernel
    for t in np.ndindex(kd, kh, kw):
        yield (
            slice(None),
            slice(None),
            *(slice(o, o + (n - 1) * s + 1, s) for o, n, s in zip(t, geom.out, geom.stride)),
        )


def _divisors(geom: Pool3dGeometry) -> np.ndarray:
    """C3D's pool_size per output position: the product of the per-axis clipped extents."""
    d = [np.array([span[2] for span in geom.spans(a)], dtype=np.float64) for a in range(3)]
    return d[0][:, None, None] * d[1][None, :, None] * d[2][None, None, :]


def pool3d(x: np.ndarray, geom: Pool3dGeometry) -> np.ndarray:
    """Pooling3DLayer::Forward_cpu (MAX or AVE)."""
    if geom.method == MAX:
        # Outside the input never wins: C3D clips windows, and -FLT_MAX is its starting value.
        padded = _padded(x, geom, -np.inf)
        y = np.full((*x.shape[:2], *geom.out), -FLT_MAX)
        for tap in _taps(geom):
            np.maximum(y, padded[tap], out=y)
        return y
    padded = _padded(x, geom, 0.0)
    y = np.zeros((*x.shape[:2], *geom.out))
    for tap in _taps(geom):
        y += padded[tap]
    return y / _divisors(geom)


def pool3d_backward(x: np.ndarray, y: np.ndarray, g: np.ndarray, geom: Pool3dGeometry):
    """Pooling3DLayer::Backward_cpu: the bottom diff for top diff ``g``."""
    fill = -np.inf if geom.method == MAX else 0.0
    padded = _padded(x, geom, fill)
    diff = np.zeros(padded.shape)
    share = g if geom.method == MAX else g / _divisors(geom)
    for tap in _taps(geom):
        # Within one tap every output position reads another element: += has no collisions.
        diff[tap] += share * (padded[tap] == y) if geom.method == MAX else share
    (pl, ph, pw) = geom.pad
    length, height, width = geom.size
    return diff[:, :, pl : pl + length, ph : ph + height, pw : pw + width]


@register("Pooling3D", "reference")
def _pooling3d(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    return [pool3d(x, pool3d_geometry(node.param.pooling3d_param, x.shape))]


@register("Pooling3D", "reference_backward")
def _pooling3d_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    (x,) = inputs
    geom = pool3d_geometry(node.param.pooling3d_param, x.shape)
    y = ctx.outputs[0] if ctx.outputs else pool3d(x, geom)
    return [pool3d_backward(x, y, top_diffs[0], geom)], []


@register("Convolution3D", "reference")
def _convolution3d(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    conv = conv3d_as_convolution(node, [x.shape])
    p = conv.param.convolution_param
    weight = ctx.blobs[0]
    bias = ctx.blobs[1].reshape(-1) if p.bias_term else None
    geom = conv_geometry(p, 3)
    clips = [convolve(x[i : i + 1], weight, bias, geom, 1) for i in range(len(x))]
    return [np.concatenate(clips) if clips else np.zeros(ctx.out_shapes[0])]


@register("Convolution3D", "reference_backward")
def _convolution3d_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    """Convolution's backward on the rewritten node; the bias diff in the bias blob's shape."""
    conv = builtin_entry("Convolution", "reference_backward")
    assert conv is not None
    rewritten = conv3d_as_convolution(node, [inputs[0].shape])
    flat = tuple(b.reshape(-1) if i == 1 else b for i, b in enumerate(ctx.blobs))
    bottoms, params = conv.fn(rewritten, inputs, top_diffs, dataclasses.replace(ctx, blobs=flat))
    params = [
        None if d is None else np.reshape(d, ctx.blobs[i].shape) for i, d in enumerate(params)
    ]
    return bottoms, params
