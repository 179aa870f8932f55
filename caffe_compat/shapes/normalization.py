"""Shape rules for the normalising layers: BatchNorm, MVN and the forks' BN (two meanings)."""

from __future__ import annotations

import numpy as np

from ..io.dialects import rescue
from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from ._synthesis import channel_moments, half_precision


def batch_norm_channels(shape: Shape) -> int:
    """Caffe's BatchNorm treats a 1-D bottom as a single channel, otherwise axis 1 holds them."""
    return 1 if len(shape) == 1 else shape[1]


@register("BatchNorm", "shape")
def _batch_norm(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    if not shape:
        raise ValueError("BatchNorm needs a bottom with at least one axis")
    c = batch_norm_channels(shape)
    return LayerShapes([shape], [(c,), (c,), (1,)])  # mean * f, variance * f, f


def legacy_4d(shape: Shape) -> Shape:
    """Caffe's num/channels/height/width view: missing trailing axes read as 1."""
    if not 1 <= len(shape) <= 4:
        raise ValueError(f"MVN reads its bottom as N x C x H x W; got {len(shape)} axes")
    return (*shape, *(1,) * (4 - len(shape)))


@register("MVN", "shape")
def _mvn(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    return LayerShapes([legacy_4d(shape)], [])  # Caffe reshapes the top to the 4-D view


def uses_global_stats(node: Node) -> bool:
    """Caffe's rule: stored statistics unless ``use_global_stats`` says otherwise; when unset,
    only in the TEST phase (the layer's ``phase``; a graph that never set it is for inference)."""
    p = node.param.batch_norm_param
    if p.HasField("use_global_stats"):
        return bool(p.use_global_stats)
    return not node.param.HasField("phase") or node.param.phase == caffe_pb2.TEST


def stored_statistics(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sqrt(variance + eps) in float32, rounded as Caffe rounds them; the blobs hold
    both times a factor f (blob 2), and f == 0 means the statistics are 0."""
    f = np.float32(node.blobs[2].reshape(-1)[0])
    factor = np.float32(0) if f == 0 else np.float32(1) / f
    mean = factor * node.blobs[0].astype(np.float32)
    var = factor * node.blobs[1].astype(np.float32)
    return mean, np.sqrt(var + np.float32(node.param.batch_norm_param.eps))


def _batch_norm_starts(shapes: list[Shape], rng: np.random.Generator) -> list[np.ndarray]:
    """Statistics stored times a factor f (blob 2), as Caffe stores them."""
    (c,) = shapes[0]
    factor = np.float32(rng.uniform(0.5, 2.0))
    mean = rng.normal(0.0, 0.5, c).astype(np.float32) * factor
    var = rng.uniform(0.5, 2.0, c).astype(np.float32) * factor
    return [mean, var, np.array([factor], dtype=np.float32)][: len(shapes)]


def _mvn_eps(node: Node) -> str | None:
    p = node.param.mvn_param
    if p.normalize_variance and p.eps >= 1e-6:
        # Negligible at the default eps (1e-9); visible once eps nears the variance.
        return "OpenCV adds MVN eps to the variance, Caffe to the standard deviation"
    return None


def _statistics_not_learned(layer: caffe_pb2.LayerParameter) -> None:
    if any(spec.lr_mult != 0 for spec in layer.param):
        raise ValueError(
            "Cannot configure batch normalization statistics as layer parameters (lr_mult must "
            "be 0)"
        )


def _batch_norm_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    """BatchNormLayer sets its three blobs (mean, variance, factor) to zero."""
    return [caffe_pb2.FillerParameter(type="constant", value=0.0) for _ in range(3)]


def _batch_norm_affine(node: Node, shape: Shape) -> tuple[np.ndarray, np.ndarray] | str:
    """With stored statistics BatchNorm is ``(x - mean) / std`` per channel."""
    if not uses_global_stats(node):
        return "normalises with batch statistics (not use_global_stats)"
    if len(node.inputs) != 1 or len(node.blobs) < 3:
        return "has no stored statistics attached"
    mean, std = stored_statistics(node)
    a = 1.0 / std.astype(np.float64)
    return a, -mean.astype(np.float64) * a


def _batch_norm_calibrate(node: Node, bottoms: list[np.ndarray]) -> None:
    """Store the calibration batch's own per-channel mean and variance (times the factor)."""
    mean, var = channel_moments(bottoms[0], 1)
    factor = float(node.blobs[2][0]) if len(node.blobs) > 2 else 1.0
    node.blobs[0] = (half_precision(mean) * factor).astype(np.float32)
    node.blobs[1] = (half_precision(var) * factor).astype(np.float32)


def _batch_statistics(node: Node, shape: Shape) -> bool:
    return not uses_global_stats(node)


describe(
    "BatchNorm",
    param_message="batch_norm_param",
    fillers=_batch_norm_fillers,
    starting_values=_batch_norm_starts,
    affine=_batch_norm_affine,
    calibrate=_batch_norm_calibrate,
    mixes_batch=_batch_statistics,
    opencv_tested=True,
    bottoms=1,
    tops=1,
    statistics=True,
    validate=_statistics_not_learned,
)
describe(
    "MVN",
    param_message="mvn_param",
    opencv_deviation=_mvn_eps,
    opencv_tested=True,
    bottoms=1,
    tops=1,
)


# --- BN: caffe-segnet's, and yjxiong's as PSPNet ships it (docs/forks.md) ---------------------

BNParameter = caffe_pb2.BNParameter
# Fields only yjxiong's BNParameter has (fields 1 and 2, the fillers, mean the same in both).
PSPNET_BN_FIELDS = ("slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine")
SEGNET_BN_EPS = 1e-9  # bn_layer.cpp's var_eps_ in caffe-segnet (LEARN mode)


def pspnet_bn(param: caffe_pb2.BNParameter) -> bool:
    """True for yjxiong's BN (PSPNet: slope, bias, mean, variance blobs), False for
    caffe-segnet's (scale, shift blobs). A layer that names neither fork's own fields is
    caffe-segnet's unless its weights hold four blobs (the ``dialect`` fact settles that)."""
    return any(param.HasField(name) for name in PSPNET_BN_FIELDS)


def bn_stored(node: Node) -> bool:
    """Whether BN normalises with stored values: caffe-segnet's INFERENCE mode (scale and shift
    already hold the statistics), yjxiong's TEST phase or ``frozen``; otherwise the batch's."""
    p = node.param.bn_param
    if pspnet_bn(p):
        return p.frozen or not node.param.HasField("phase") or node.param.phase == caffe_pb2.TEST
    return p.bn_mode == BNParameter.INFERENCE


def _bn_dialect(layer: caffe_pb2.LayerParameter, blobs: int | None) -> str | None:
    notes = []
    # yjxiong's 137 (BVLC's embed_param), PSPNet's 152, happynear's 200 (SSD's annotated_data_param)
    if rescue(layer, "bn_param", parsed_as=("embed_param", "annotated_data_param"), unknown=(152,)):
        notes.append("bn_param read from field 137 (yjxiong), 152 (PSPNet) or 200 (happynear)")
    p = layer.bn_param
    if not pspnet_bn(p) and not p.HasField("bn_mode") and blobs == 4:
        p.eps = p.eps  # set, so every reader takes yjxiong's meaning
        notes.append("its weights hold 4 blobs: yjxiong's/PSPNet's BN (slope, bias, mean, var)")
    return "; ".join(notes) or None


@register("BN", "shape")
def _bn(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    if len(shape) != 4:
        raise ValueError(f"BN reads its bottom as N x C x H x W; got {len(shape)} axes")
    blob = (1, shape[1], 1, 1)
    return LayerShapes([shape], [blob] * (4 if pspnet_bn(node.param.bn_param) else 2))


def bn_affine(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (a, c) with BN's stored form equal to ``x * a + c`` (float64)."""
    blobs = [np.asarray(b, np.float64).reshape(-1) for b in node.blobs]
    if pspnet_bn(node.param.bn_param):
        slope, bias, mean, var = blobs[:4]
        a = slope / np.sqrt(var + float(np.float32(node.param.bn_param.eps)))
        return a, bias - mean * a
    return blobs[0], blobs[1]


def _bn_affine(node: Node, shape: Shape) -> tuple[np.ndarray, np.ndarray] | str:
    if not bn_stored(node):
        return "normalises with batch statistics"
    if len(node.blobs) < (4 if pspnet_bn(node.param.bn_param) else 2):
        return "has no blobs attached"
    return bn_affine(node)


def _bn_starts(shapes: list[Shape], rng: np.random.Generator) -> list[np.ndarray]:
    """Scale near 1 and a small shift; yjxiong's also a mean and a positive variance."""
    c = shapes[0][1]
    starts = [rng.uniform(0.5, 1.5, c), rng.normal(0.0, 0.2, c)]
    if len(shapes) == 4:
        starts += [rng.normal(0.0, 0.5, c), rng.uniform(0.5, 2.0, c)]
    return [a.reshape(1, c, 1, 1).astype(np.float32) for a in starts]


def _bn_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    """caffe-segnet: scale_filler, shift_filler. yjxiong: slope_filler, bias_filler, then the
    mean at 0 and the variance at 1 when frozen, else 0."""
    p = layer.bn_param
    if not pspnet_bn(p):
        return [p.scale_filler, p.shift_filler]
    slope = p.slope_filler if p.HasField("slope_filler") else p.scale_filler
    bias = p.bias_filler if p.HasField("bias_filler") else p.shift_filler
    var = 1.0 if p.frozen else 0.0
    return [
        slope,
        bias,
        caffe_pb2.FillerParameter(type="constant", value=0.0),
        caffe_pb2.FillerParameter(type="constant", value=var),
    ]


def _bn_batch(node: Node, shape: Shape) -> bool:
    return not bn_stored(node)


describe(
    "BN",
    origin="caffe-segnet (scale, shift); yjxiong/PSPNet (slope, bias, mean, variance)",
    param_message="bn_param",
    dialect=_bn_dialect,
    fillers=_bn_fillers,
    starting_values=_bn_starts,
    affine=_bn_affine,
    mixes_batch=_bn_batch,
    bottoms=1,
    tops=1,
)
