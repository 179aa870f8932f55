"""Shape rules for the one-bottom pointwise layers (PReLU alone has a blob), and the float32
constants Caffe derives from Power, Exp and Log parameters at set-up, so every back end uses
bit-identical values."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from ._synthesis import positive

SAME_SHAPE_TYPES = (
    "ReLU",
    "Sigmoid",
    "TanH",
    "AbsVal",
    "BNLL",
    "Power",
    "ELU",
    "Dropout",
    "Threshold",
    "Swish",
    "ReLU6",
    "Mish",
)


@register(SAME_SHAPE_TYPES, "shape")
def _same_shape(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    return LayerShapes([shape], [])


@register(("Exp", "Log"), "shape")
def _exp_log(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.exp_param if node.type == "Exp" else node.param.log_param
    if p.base != -1 and not 0 < p.base < float("inf"):
        raise ValueError(f"base {p.base:g} must be positive and finite (or -1 for e)")
    if node.type == "Log" and p.base == 1:
        raise ValueError("base 1 has no logarithm to divide by")
    return LayerShapes([shape], [])


@register("Clip", "shape")
def _clip(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.clip_param
    if not (p.HasField("min") and p.HasField("max")):
        raise ValueError("clip_param needs both min and max")
    return LayerShapes([shape], [])


@register("PReLU", "shape")
def _prelu(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    if len(shape) < 2:
        raise ValueError("PReLU needs a bottom with at least 2 axes")
    slopes = () if node.param.prelu_param.channel_shared else (shape[1],)
    return LayerShapes([shape], [slopes])  # one slope per channel, or a 0-axis blob


# Caffe computes these constants in float32 at set-up; both back ends use the same values.
def power_constant(power: float, shift: float) -> float:
    """PowerLayer's output when scale or power is 0: 1 for power 0, else shift ** power."""
    return 1.0 if power == 0 else float(np.float32(shift) ** np.float32(power))


def exp_constants(base: float, scale: float, shift: float) -> tuple[float, float]:
    """ExpLayer's y = outer * exp(inner * x): inner = ln(base) * scale, outer = base ** shift."""
    log_base = np.float32(1) if base == -1 else np.log(np.float32(base))
    outer = (
        np.float32(1)
        if shift == 0
        else (np.exp(np.float32(shift)) if base == -1 else np.float32(base) ** np.float32(shift))
    )
    return float(np.float32(log_base * np.float32(scale))), float(outer)


def log_base_scale(base: float) -> float:
    """Caffe's LogLayer multiplies ln(.) by 1 / ln(base)."""
    return 1.0 if base == -1 else float(np.float32(1) / np.log(np.float32(base)))


# The ONNX graph input (bool scalar, default true) that switches every Monte Carlo dropout
# between sampling and its expected value; one name for the whole model.
SAMPLING_SWITCH = "mc_dropout_sampling"


def samples_at_test(node: Node) -> bool:
    """caffe-segnet's Dropout with ``sample_weights_test: true`` (Bayesian SegNet's Monte Carlo
    dropout): its Forward_cpu draws a Bernoulli(1 - ratio) mask and scales by 1 / (1 - ratio) in
    the TEST phase too, so every run differs. Its expected value is the identity."""
    if node.type != "Dropout" or not node.param.dropout_param.sample_weights_test:
        return False
    return not node.param.HasField("phase") or node.param.phase == caffe_pb2.TEST


def dropout_scales(node: Node) -> tuple[float, float]:
    """(the factor on kept values while training, the factor at test), as float32 numbers:
    BVLC's (``scale_ = 1. / (1. - ratio)``, 1); caffe-fast-rcnn's ``scale_train: false``
    (1, ``1. / scale_``: its TEST forward copies the bottom and ``caffe_scal``s it)."""
    p = node.param.dropout_param
    scale = float(np.float32(1.0 / (1.0 - float(np.float32(p.dropout_ratio)))))
    if p.scale_train:
        return scale, 1.0
    return 1.0, float(np.float32(1.0 / scale))


def sampling_note(node: Node) -> str:
    """What the reports say about one Monte Carlo dropout layer."""
    return (
        f'layer "{node.name}": dropout_param {{ sample_weights_test: true }} (caffe-segnet\'s '
        "Monte Carlo dropout) draws a fresh mask on every run in PyTorch and ONNX (feed "
        f"{SAMPLING_SWITCH}=false for the mean network); verify compares every back end at the "
        "expected value (the mean network: this layer as the identity)"
    )


def _log_params(node: Node) -> str | None:
    p = node.param.log_param
    if p.base != -1.0 or p.scale != 1.0 or p.shift:
        return "OpenCV ignores log_param and computes ln(x)"
    return None


def _swish_beta(node: Node) -> str | None:
    if node.param.swish_param.beta != 1.0:
        return "OpenCV ignores Swish beta"
    return None


def _prelu_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    """PReLULayer: ``filler``, or a constant 0.25 when none is given."""
    p = layer.prelu_param
    if p.HasField("filler"):
        return [p.filler]
    return [caffe_pb2.FillerParameter(type="constant", value=0.25)]


NEURON = {"bottoms": 1, "tops": 1}  # Caffe's NeuronLayer: one bottom, one top
describe(
    ("AbsVal", "BNLL", "Dropout", "ELU", "Exp", "ReLU", "Sigmoid", "TanH"),
    opencv_tested=True,
    **NEURON,
)


def _power_error_gain(node: Node, value) -> dict[int, float]:
    """(shift + scale x)^power with power 1 moves an error by |scale| (hard-sigmoid's 1/6);
    other powers keep the default (verify/compare.py ``error_scales``)."""
    p = node.param.power_param
    return {0: abs(float(p.scale))} if float(p.power) == 1.0 else {}


describe("Power", error_gain=_power_error_gain, opencv_tested=True, **NEURON)


def _threshold_has_no_backward(node: Node, bottom: int) -> str | None:
    return "Threshold has no backward (Caffe: Not Implemented Yet)"


describe("Threshold", no_backward=_threshold_has_no_backward, **NEURON)
describe("Clip", **NEURON)
describe("Log", opencv_deviation=_log_params, opencv_tested=True, **NEURON)
describe("Swish", opencv_deviation=_swish_beta, opencv_tested=True, **NEURON)
describe(
    "PReLU",
    param_message="prelu_param",
    starting_values=positive(0.05, 0.3),
    fillers=_prelu_fillers,
    opencv_tested=True,
    **NEURON,
)
describe(
    "ReLU6",
    origin="MobileNet v2/v3 Caffe ports",
    opencv_tested=True,
    **NEURON,
)
describe(
    "Mish",
    origin="darknet2caffe YOLOv4 ports",
    param_message="mish_param",
    opencv_tested=True,
    **NEURON,
)
