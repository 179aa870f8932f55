"""Shape rules and facts of Caffe's loss layers (``src/caffe/layers/*_loss_layer.cpp``).

Every loss is a ``LossLayer``: a scalar first top weighted 1 unless ``loss_weight`` says otherwise,
an anonymous top when the definition names none, and bottom 0 and bottom 1 with the same first
axis. They exist only in nets built for training; inference graphs drop them.
"""

from __future__ import annotations

import math

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from .geometry import canonical_axis

Norm = caffe_pb2.LossParameter
SCALAR: Shape = ()
LOSS_TYPES = (
    "SoftmaxWithLoss",
    "EuclideanLoss",
    "SigmoidCrossEntropyLoss",
    "HingeLoss",
    "ContrastiveLoss",
    "InfogainLoss",
    "MultinomialLogisticLoss",
)


def legacy(shape: Shape, index: int) -> int:
    """Caffe's ``LegacyShape``: num/channels/height/width of a blob of at most 4 axes (1 past
    its last axis)."""
    if len(shape) > 4:
        raise ValueError(f"a {len(shape)}-D bottom has no num/channels/height/width (at most 4-D)")
    return shape[index] if index < len(shape) else 1


def _same_batch(inputs: list[Shape]) -> None:
    """``LossLayer::Reshape``: the data and the label share their first axis."""
    first, second = inputs[0], inputs[1]
    if not first or not second or first[0] != second[0]:
        raise ValueError(
            f"bottoms {list(first)} and {list(second)} differ in the first axis; the data and "
            "the label should have the same first dimension"
        )


def _class_axis(node: Node, shape: Shape) -> int:
    if node.type == "InfogainLoss":
        return canonical_axis(int(node.param.infogain_loss_param.axis), len(shape))
    return canonical_axis(int(node.param.softmax_param.axis), len(shape))


def _labels_per_prediction(node: Node, inputs: list[Shape]) -> None:
    shape, axis = inputs[0], _class_axis(node, inputs[0])
    outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
    if outer * inner != math.prod(inputs[1]):
        raise ValueError(
            f"{math.prod(inputs[1])} labels for {outer * inner} predictions; with the class "
            f"axis {axis} of a {list(shape)} bottom the label count must be {outer * inner}"
        )


@register(("SoftmaxWithLoss", "InfogainLoss"), "shape")
def _softmax_loss(node: Node, inputs: list[Shape]) -> LayerShapes:
    _same_batch(inputs)
    _labels_per_prediction(node, inputs)
    if len(inputs) == 3:  # InfogainLoss's H as a bottom: classes x classes values
        classes = inputs[0][_class_axis(node, inputs[0])]
        if math.prod(inputs[2]) != classes * classes:
            raise ValueError(
                f"H holds {math.prod(inputs[2])} values; {classes} classes need {classes * classes}"
            )
    return LayerShapes([SCALAR, inputs[0]][: max(1, len(node.outputs))], [])


@register(("EuclideanLoss", "SigmoidCrossEntropyLoss"), "shape")
def _same_count_loss(node: Node, inputs: list[Shape]) -> LayerShapes:
    _same_batch(inputs)
    a, b = inputs
    if node.type == "EuclideanLoss" and math.prod(a[1:]) != math.prod(b[1:]):
        raise ValueError(f"inputs must have the same dimension: {list(a)} and {list(b)}")
    if node.type == "SigmoidCrossEntropyLoss" and math.prod(a) != math.prod(b):
        raise ValueError(f"inputs must have the same count: {list(a)} and {list(b)}")
    return LayerShapes([SCALAR], [])


@register(("HingeLoss", "MultinomialLogisticLoss"), "shape")
def _label_loss(node: Node, inputs: list[Shape]) -> LayerShapes:
    _same_batch(inputs)
    if node.type == "MultinomialLogisticLoss" and any(legacy(inputs[1], i) != 1 for i in (1, 2, 3)):
        raise ValueError(f"the label must be N x 1 x 1 x 1, got {list(inputs[1])}")
    return LayerShapes([SCALAR], [])


@register("ContrastiveLoss", "shape")
def _contrastive(node: Node, inputs: list[Shape]) -> LayerShapes:
    _same_batch(inputs)
    a, b, similar = inputs
    if legacy(a, 1) != legacy(b, 1) or any(legacy(s, i) != 1 for s in (a, b) for i in (2, 3)):
        raise ValueError(
            f"the two feature bottoms must be N x C x 1 x 1 alike: {list(a)}, {list(b)}"
        )
    if any(legacy(similar, i) != 1 for i in (1, 2, 3)):
        raise ValueError(f"the similarity bottom must be N x 1 x 1 x 1, got {list(similar)}")
    return LayerShapes([SCALAR], [])


def _no_label_backward(node: Node, bottom: int) -> str | None:
    if bottom == 1:
        return f"{node.type} Layer cannot backpropagate to label inputs"
    if bottom == 2 and node.type == "InfogainLoss":
        return "InfogainLoss Layer cannot backpropagate to infogain inputs"
    return None


def _infogain_settings(layer: caffe_pb2.LayerParameter) -> None:
    if layer.loss_param.HasField("normalize"):
        raise ValueError('normalize is deprecated in InfogainLoss; use "normalization"')
    if len(layer.bottom) < 3 and not layer.infogain_loss_param.source:
        raise ValueError(
            "InfogainLoss needs its matrix H: infogain_loss_param.source or a third bottom"
        )


def _softmax_loss_settings(layer: caffe_pb2.LayerParameter) -> None:
    if len(layer.top) == 2:
        # Its inner Softmax copies the layer's loss weights: one weight for two tops, or two
        # for the Softmax's one top, and Caffe's SetLossWeights aborts either way.
        raise ValueError(
            "a second top (the probabilities) makes Caffe abort (loss_weight must be "
            "specified once per top blob); add a Softmax layer for them instead"
        )


def _hinge_settings(layer: caffe_pb2.LayerParameter) -> None:
    if layer.hinge_loss_param.norm not in (
        caffe_pb2.HingeLossParameter.L1,
        caffe_pb2.HingeLossParameter.L2,
    ):
        raise ValueError("hinge_loss_param.norm must be L1 or L2")


def normalization(layer: caffe_pb2.LayerParameter) -> int:
    """The normalisation mode Caffe uses: ``normalization`` when set, else the legacy
    ``normalize`` (true: VALID, false: BATCH_SIZE), else VALID, except SigmoidCrossEntropyLoss,
    whose default is BATCH_SIZE (sigmoid_cross_entropy_loss_layer.cpp)."""
    p = layer.loss_param
    if p.HasField("normalization"):
        return int(p.normalization)
    if p.HasField("normalize"):
        return Norm.VALID if p.normalize else Norm.BATCH_SIZE
    return Norm.BATCH_SIZE if layer.type == "SigmoidCrossEntropyLoss" else Norm.VALID


def normalizer(mode: int, outer: int, inner: int, valid: int) -> float:
    """Caffe's ``get_normalizer``: FULL, VALID (the labels not ignored), BATCH_SIZE or NONE,
    never below 1."""
    value = {
        Norm.FULL: outer * inner,
        Norm.VALID: valid,
        Norm.BATCH_SIZE: outer,
        Norm.NONE: 1,
    }[mode]
    return max(1.0, float(value))


def _not_the_label(node: Node, bottom: int) -> bool:
    """``LossLayer::AllowForceBackward``: force_backward never reaches the labels."""
    return bottom != 1


def _any_bottom(node: Node, bottom: int) -> bool:
    return True  # EuclideanLoss: both bottoms are data


def _not_the_similarity(node: Node, bottom: int) -> bool:
    return bottom != 2  # ContrastiveLoss: bottom 2 says which pairs are similar


_COMMON = {
    "role": "training",
    "loss": True,
    "no_backward": _no_label_backward,
    "force_backward": _not_the_label,
}
describe("SoftmaxWithLoss", bottoms=2, tops=(0, 2), validate=_softmax_loss_settings, **_COMMON)
describe("InfogainLoss", bottoms=(2, 3), tops=(0, 2), validate=_infogain_settings, **_COMMON)
describe(("SigmoidCrossEntropyLoss", "MultinomialLogisticLoss"), bottoms=2, tops=(0, 1), **_COMMON)
describe("HingeLoss", bottoms=2, tops=(0, 1), validate=_hinge_settings, **_COMMON)
describe(
    "EuclideanLoss", role="training", bottoms=2, tops=(0, 1), loss=True, force_backward=_any_bottom
)
describe(
    "ContrastiveLoss",
    role="training",
    bottoms=3,
    tops=(0, 1),
    loss=True,
    force_backward=_not_the_similarity,
)
