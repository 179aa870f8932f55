"""CTCGreedyDecoder in float64 (caffe_ocr's ``CTCGreedyDecoderLayer::Decode``, see
caffe_compat.shapes.ctc): the first best class per step, blanks and (optionally) repeats
dropped, kept labels moved to the front of each image's row by a stable sort."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.ctc import blank_of
from ._base import Arrays, LayerContext


@register("CTCGreedyDecoder", "reference")
def _ctc_greedy(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (x,) = inputs
    t, n, c = x.shape[:3]
    p = node.param.ctc_decoder_param
    best = x.reshape(t, n, c).argmax(axis=2).T  # (N, T): the first maximum, as the loop
    previous = np.concatenate([np.full((n, 1), -1), best[:, :-1]], axis=1)
    keep = best != blank_of(p, c)
    if p.ctc_merge_repeated:
        keep &= best != previous
    order = np.argsort(~keep, axis=1, kind="stable")  # kept steps first, in time order
    rows = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(best, order, 1), -1)
    return [rows.astype(np.float64).reshape(n, t, 1, 1)]
