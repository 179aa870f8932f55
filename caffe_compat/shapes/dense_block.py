"""DenseBlock, senlinuc/caffe_ocr's whole DenseNet block in one layer (DenseBlock_layer.cpp/.cu).

Transition i (0 <= i < numTransition) reads the C_i = C + i * growthRate channels so far (C: the
bottom's channels; the fork ignores ``initChannel``) and appends growthRate new ones:
BN (stored statistics), ReLU, with ``use_BC`` a 1x1 convolution to 4 * growthRate channels, BN,
ReLU, then a 3x3 convolution with pad 1 and stride 1 (fixed in the C++; the proto's pad, stride
and filter fields are never read). Both of the fork's code paths run a true convolution (the
CPU loop reads ``x[h + 1 - kh]``, the GPU path asks cuDNN for CUDNN_CONVOLUTION), so the 3x3
weight is applied flipped compared with Caffe's Convolution. BN's eps is 1e-5.

Blob order (5T + 1 blobs, 10T + 1 with ``use_BC``, T = numTransition): the T 3x3 filters
(growthRate, C_i or 4 * growthRate, 3, 3), the T scalers, T biases, T means and T variances
(each 1 x C_i x 1 x 1), [with BC: the T 1x1 filters (4g, C_i, 1, 1), then the scalers, biases,
means and variances of the BC batch norms (1 x 4g x 1 x 1)], and last a one-value factor.

The factor: the CPU path divides the stored mean and variance by it (0 makes them 0), like
BVLC's BatchNorm; the GPU path, which trained the published models, never writes it (it stays
0) and normalises with the blobs as they are. Here a factor of 0 means the GPU reading (the
blobs as they are: a CPU run of such a model zeroes the statistics, which no published model
meant) and any other factor the CPU reading. The TRAIN phase (batch statistics, dropout) is
refused: the fork's CPU and GPU paths compute different variances there.

One graph node, not an expansion into BatchNorm/Scale/ReLU/Convolution/Concat: the weights
load in the fork's own blob order and each back end runs the block itself.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..io.dialects import rescue
from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from ._synthesis import half_precision

DENSE_BLOCK_EPS = 1e-5  # the CPU path's epsilon; CUDNN_BN_MIN_EPSILON in the GPU path
BC_WIDTH = 4  # the bottleneck's width in growth rates
MAX_TRANSITIONS = 4096


class DenseBlockPlan(NamedTuple):
    """The block's structure for a bottom of ``channels`` channels."""

    transitions: int
    growth: int
    bottleneck: bool
    channels: int

    def width(self, i: int) -> int:
        """Channels transition i reads."""
        return self.channels + i * self.growth


def dense_block_plan(node: Node, channels: int) -> DenseBlockPlan:
    p = node.param.denseblock_param
    if p.numTransition < 0:
        raise ValueError(f"denseblock_param.numTransition is {p.numTransition}; must be >= 0")
    if p.numTransition > MAX_TRANSITIONS:  # one blob list entry each: checked before any
        raise ValueError(
            f"denseblock_param.numTransition is {p.numTransition}; at most {MAX_TRANSITIONS} "
            "are read (published DenseNets use tens)"
        )
    if p.numTransition and p.growthRate <= 0:
        raise ValueError(f"denseblock_param.growthRate is {p.growthRate}; must be > 0")
    return DenseBlockPlan(int(p.numTransition), int(p.growthRate), bool(p.use_BC), channels)


class Transition(NamedTuple):
    """Transition i's blobs, as arrays: BN (scaler, bias, mean, variance), the 3x3 filter, and
    with BC the 1x1 filter and its BN (None without BC)."""

    bn: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    filter3: np.ndarray
    filter1: np.ndarray | None
    bn_bc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None


def transitions(plan: DenseBlockPlan, blobs: list[np.ndarray] | tuple[np.ndarray, ...]):
    """Each transition's blobs, read from the fork's order (see the module docstring)."""
    t = plan.transitions
    for i in range(t):
        bn = tuple(blobs[k * t + i] for k in (1, 2, 3, 4))
        bc = tuple(blobs[k * t + i] for k in (6, 7, 8, 9)) if plan.bottleneck else None
        yield Transition(bn, blobs[i], blobs[5 * t + i] if plan.bottleneck else None, bc)


def stored_statistics(
    mean: np.ndarray, var: np.ndarray, factor: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance as inference uses them (float64): divided by the factor unless it is 0
    (the GPU-trained reading; see the module docstring)."""
    f = float(np.asarray(factor, np.float32).reshape(-1)[0])
    scale = 1.0 if f == 0 else float(np.float32(1) / np.float32(f))
    m = np.asarray(mean, np.float64).reshape(-1) * scale
    v = np.asarray(var, np.float64).reshape(-1) * scale
    return m, v


def affine(bn: tuple[np.ndarray, ...], factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (a, c) with the BN equal to ``x * a + c`` (float64)."""
    scaler, bias, mean, var = bn
    m, v = stored_statistics(mean, var, factor)
    a = np.asarray(scaler, np.float64).reshape(-1) / np.sqrt(v + DENSE_BLOCK_EPS)
    return a, np.asarray(bias, np.float64).reshape(-1) - m * a


def _train_phase(node: Node) -> bool:
    return node.param.HasField("phase") and node.param.phase == caffe_pb2.TRAIN


@register("DenseBlock", "shape")
def _dense_block(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    if len(shape) != 4:
        raise ValueError(f"DenseBlock reads its bottom as N x C x H x W; got {len(shape)} axes")
    if _train_phase(node):
        raise ValueError(
            "DenseBlock in the TRAIN phase (batch statistics, dropout) is not supported: the "
            "fork's CPU and GPU paths compute different variances there"
        )
    n, c, h, w = shape
    plan = dense_block_plan(node, c)
    t, g = plan.transitions, plan.growth
    widths = [plan.width(i) for i in range(t)]
    conv_in = [BC_WIDTH * g] * t if plan.bottleneck else widths
    params: list[Shape] = [(g, conv_in[i], 3, 3) for i in range(t)]
    params += [(1, widths[i], 1, 1) for _ in range(4) for i in range(t)]
    if plan.bottleneck:
        params += [(BC_WIDTH * g, widths[i], 1, 1) for i in range(t)]
        params += [(1, BC_WIDTH * g, 1, 1)] * (4 * t)
    params.append((1,))
    return LayerShapes([(n, c + t * g, h, w)], params)


def _fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    """LayerSetUp: filters from Filter_Filler, scalers and biases from BN_Scaler_Filler and
    BN_Bias_Filler, means 0, variances 1, the factor 0."""
    p = layer.denseblock_param
    t = int(p.numTransition)

    def const(v: float) -> caffe_pb2.FillerParameter:
        return caffe_pb2.FillerParameter(type="constant", value=v)

    bn = [p.BN_Scaler_Filler] * t + [p.BN_Bias_Filler] * t + [const(0.0)] * t + [const(1.0)] * t
    fillers = [p.Filter_Filler] * t + bn
    if p.use_BC:
        fillers += [p.Filter_Filler] * t + bn
    return [*fillers, const(0.0)]


def _starts(shapes: list[Shape], rng: np.random.Generator) -> list[np.ndarray]:
    """He filters; BN scalers near 1, small biases and means, variances in [0.5, 2]; factor 1."""
    t = sum(1 for s in shapes if len(s) == 4 and s[-1] == 3)  # one 3x3 filter per transition
    draws = (
        lambda n: rng.uniform(0.5, 1.5, n),
        lambda n: rng.normal(0.0, 0.2, n),
        lambda n: rng.normal(0.0, 0.5, n),
        lambda n: rng.uniform(0.5, 2.0, n),
    )
    out = []
    for j, shape in enumerate(shapes[:-1]):
        group = j // t if t else 0
        if group in (0, 5):  # 3x3 and 1x1 filters
            fan_in = int(np.prod(shape[1:]))
            out.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32))
        else:  # scaler, bias, mean, variance
            draw = draws[(group - 1) % 5]
            out.append(draw(shape[1]).reshape(shape).astype(np.float32))
    return [*out, np.ones(shapes[-1], np.float32)]


def _workspace(node: Node, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
    """Beyond the top: the widest transition's BN and ReLU outputs (and the bottleneck's) and
    the 3x3 im2col columns of its input, which the back ends build per transition."""
    n, c, h, w = in_shapes[0]
    plan = dense_block_plan(node, c)
    if not plan.transitions:
        return 0
    widest = plan.width(plan.transitions - 1)
    conv_in = BC_WIDTH * plan.growth if plan.bottleneck else widest
    hidden = 2 * widest + (2 * BC_WIDTH * plan.growth if plan.bottleneck else 0)
    return n * h * w * (hidden + 9 * conv_in)


def _true_conv3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The fork's 3x3 convolution, pad 1: ``y[h, w] = sum k[i, j] x[h + 1 - i, w + 1 - j]``."""
    h, wd = x.shape[2:]
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    y = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(3):  # kernel taps only
        for j in range(3):
            window = padded[:, :, 2 - i : 2 - i + h, 2 - j : 2 - j + wd]
            y += np.einsum("nchw,oc->nohw", window, w[:, :, i, j])
    return y


def _calibrate(node: Node, bottoms: list[np.ndarray]) -> None:
    """Synthesis: each BN inside the block takes the mean and variance of what it sees, one
    transition after another (stored times the factor, as the blobs hold them)."""
    merged = np.asarray(bottoms[0], np.float64)
    plan = dense_block_plan(node, merged.shape[1])
    t, blobs = plan.transitions, node.blobs
    f = float(np.asarray(blobs[-1]).reshape(-1)[0]) or 1.0

    def norm_relu(x: np.ndarray, first: int, i: int) -> np.ndarray:
        mean, var = half_precision(x.mean(axis=(0, 2, 3))), half_precision(x.var(axis=(0, 2, 3)))
        shape = blobs[first * t + i].shape
        blobs[(first + 2) * t + i] = (mean * f).reshape(shape).astype(np.float32)
        blobs[(first + 3) * t + i] = (var * f).reshape(shape).astype(np.float32)
        bn = tuple(blobs[(first + k) * t + i] for k in range(4))
        a, c = affine(bn, blobs[-1])
        return np.maximum(x * a.reshape(1, -1, 1, 1) + c.reshape(1, -1, 1, 1), 0.0)

    for i in range(t):
        y = norm_relu(merged, 1, i)
        if plan.bottleneck:
            y = np.einsum("nchw,oc->nohw", y, np.asarray(blobs[5 * t + i], np.float64)[:, :, 0, 0])
            y = norm_relu(y, 6, i)
        new = _true_conv3(y, np.asarray(blobs[i], np.float64))
        merged = np.concatenate([merged, new], axis=1)


def _dialect(layer: caffe_pb2.LayerParameter, blobs: int | None) -> str | None:
    if rescue(layer, "denseblock_param", parsed_as=("swish_param",)):
        return "denseblock_param read from field 147 (caffe_ocr; BVLC's swish_param)"
    return None


describe(
    "DenseBlock",
    origin="senlinuc/caffe_ocr",
    param_message="denseblock_param",
    fillers=_fillers,
    starting_values=_starts,
    dialect=_dialect,
    workspace=_workspace,
    calibrate=_calibrate,
    bottoms=1,
    tops=1,
)
