"""Shape rule of ``CTCGreedyDecoder`` (caffe_ocr, senlinuc/caffe_ocr's ``ctc_decoder_layer.cpp``:
the decoder of its DenseNet + BLSTM + CTC text recognisers).

The bottom holds class scores ``T x N x C`` (time first). Per image and time step the decoder
takes the first class with the highest score, drops it when it is the blank (``blank_index``,
negative: the last class) or, with ``ctc_merge_repeated``, when it repeats the previous step's
class; the kept labels go, in order, into the image's row of the top ``N x T x 1 x 1``, the rest
of the row being -1. The fork's other form (a label bottom, giving an edit-distance accuracy) is
a training-time measure and is refused.
"""

from __future__ import annotations

import math

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register


def blank_of(p: caffe_pb2.CTCDecoderParameter, classes: int) -> int:
    blank = int(p.blank_index)
    return classes - 1 if blank < 0 else blank


@register("CTCGreedyDecoder", "shape")
def _ctc_greedy(node: Node, inputs: list[Shape]) -> LayerShapes:
    if len(inputs) != 1 or len(node.outputs) != 1:
        raise ValueError(
            "only the decoding form (one bottom of scores, one top) is supported; the form "
            "with a label bottom measures accuracy while training"
        )
    (shape,) = inputs
    if len(shape) < 3 or math.prod(shape[3:]) != 1:
        raise ValueError(f"the scores must be T x N x C, not {list(shape)}")
    t, n, c = shape[:3]
    if c < 1:
        raise ValueError("the scores have no class")
    return LayerShapes([(n, t, 1, 1)], [])


def _no_backward(node: Node, bottom: int) -> str | None:
    return "CTCGreedyDecoder has no backward (caffe_ocr leaves it empty)"


describe(
    "CTCGreedyDecoder",
    origin="caffe_ocr (senlinuc/caffe_ocr)",
    param_message="ctc_decoder_param",
    bottoms=(1, 3),
    tops=(1, 3),
    no_backward=_no_backward,
)
