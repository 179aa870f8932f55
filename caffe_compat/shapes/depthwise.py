"""Shape rule for the forks' depthwise convolutions (``ConvolutionDepthwise``,
``DepthwiseConvolution``): Convolution with ``group`` forced to the input channel count.

The forks that introduced these types (MobileNet ports) implement a grouped convolution with one
group per input channel, taking every other setting from ``convolution_param``. Rewriting the
layer as that Convolution and reusing its rule keeps one source of truth for conv geometry.
"""

from __future__ import annotations

import dataclasses

from .. import registry
from ..ir.graph import Node, Shape
from ..registry import LayerShapes, register
from .geometry import canonical_axis

DEPTHWISE_TYPES = ("ConvolutionDepthwise", "DepthwiseConvolution")


def as_grouped_convolution(node: Node, channels: int) -> Node:
    """The equivalent Convolution node: same wiring and weights, ``group`` = input channels."""
    p = node.param.convolution_param
    if p.HasField("group") and p.group != channels:
        raise ValueError(f"group {p.group} contradicts a depthwise layer over {channels} channels")
    param = type(node.param)()
    param.CopyFrom(node.param)
    param.type = "Convolution"
    param.convolution_param.group = channels
    return dataclasses.replace(node, type="Convolution", param=param)


def input_channels(node: Node, shape: Shape) -> int:
    return shape[canonical_axis(int(node.param.convolution_param.axis), len(shape))]


@register(DEPTHWISE_TYPES, "shape")
def _depthwise(node: Node, inputs: list[Shape]) -> LayerShapes:
    conv = as_grouped_convolution(node, input_channels(node, inputs[0]))
    entry = registry.lookup("Convolution", "shape")
    assert entry is not None  # built in
    return entry.fn(conv, inputs)
