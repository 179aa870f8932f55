"""Shape rule, settings and anchors of ``Proposal``: py-faster-rcnn's RPN proposal layer
(``lib/rpn/proposal_layer.py``, a Python layer there) as the built-in type OpenCV 4 also has.

Bottoms: ``rpn_cls_prob_reshape`` (1 x 2A x H x W; the last A channels are the object scores),
``rpn_bbox_pred`` (1 x 4A x H x W) and ``im_info`` (1 x 3: image height, width, scale). Tops:
the ROIs, R x 5 ``[0, x1, y1, x2, y2]``, and optionally their scores, R x 1. R depends on the
data (at most ``post_nms_topn``): like py-faster-rcnn's setup, the shape rule reports one row,
and every back end returns the true count (the ``varying_rows`` fact).

Semantics (TEST phase, py-faster-rcnn's ``config.py``): anchors from ``generate_anchors`` (base
box ``[0, 0, base_size - 1, base_size - 1]``, ratios with numpy's rounding, then scales) shifted
by ``feat_stride`` per cell, ordered (y, x, anchor); ``bbox_transform_inv`` with +1 widths;
corners clipped to ``[0, width - 1]`` and ``[0, height - 1]``; boxes narrower or lower than
``min_size * im_info[2]`` (+1 sizes) dropped; the best ``pre_nms_topn`` scores kept, greedy NMS
(overlap with +1 areas, a box goes when its overlap exceeds ``nms_thresh``), the first
``post_nms_topn`` kept. Only single-image batches, as py-faster-rcnn asserts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register

DEFAULT_RATIOS = (0.5, 1.0, 2.0)
DEFAULT_SCALES = (8.0, 16.0, 32.0)


@dataclass(frozen=True)
class ProposalSettings:
    feat_stride: int
    base_size: int
    min_size: float
    ratios: tuple[float, ...]
    scales: tuple[float, ...]
    pre_nms_topn: int  # <= 0: keep every box
    post_nms_topn: int
    nms_thresh: float

    @property
    def anchors(self) -> np.ndarray:
        return generate_anchors(self.base_size, self.ratios, self.scales)


def proposal_settings(p: caffe_pb2.ProposalParameter) -> ProposalSettings:
    """OpenCV's ``proposal_param`` with py-faster-rcnn's TEST defaults."""
    ratios = tuple(float(r) for r in p.ratio) or DEFAULT_RATIOS
    scales = tuple(float(s) for s in p.scale) or DEFAULT_SCALES
    if p.feat_stride <= 0 or p.base_size <= 0:
        raise ValueError("proposal_param.feat_stride and base_size must be > 0")
    if any(not math.isfinite(v) or v <= 0 for v in (*ratios, *scales)):
        raise ValueError("proposal_param ratios and scales must be positive numbers")
    if not math.isfinite(p.nms_thresh):
        raise ValueError("proposal_param.nms_thresh must be a number")
    return ProposalSettings(
        feat_stride=int(p.feat_stride),
        base_size=int(p.base_size),
        min_size=float(p.min_size),
        ratios=ratios,
        scales=scales,
        pre_nms_topn=int(p.pre_nms_topn),
        post_nms_topn=int(p.post_nms_topn),
        nms_thresh=float(np.float32(p.nms_thresh)),
    )


def _corners(ws: np.ndarray, hs: np.ndarray, x: float, y: float) -> np.ndarray:
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack(
        [x - 0.5 * (ws - 1), y - 0.5 * (hs - 1), x + 0.5 * (ws - 1), y + 0.5 * (hs - 1)]
    )


def generate_anchors(base_size: int, ratios, scales) -> np.ndarray:
    """py-faster-rcnn's ``generate_anchors``: (A, 4) float64, ratio-major then scale."""
    base = np.array([0.0, 0.0, base_size - 1.0, base_size - 1.0])
    w, h = base[2] - base[0] + 1, base[3] - base[1] + 1
    x, y = base[0] + 0.5 * (w - 1), base[1] + 0.5 * (h - 1)
    ratios = np.asarray(ratios, dtype=np.float64)
    ws = np.round(np.sqrt(w * h / ratios))  # numpy's round, as the original
    hs = np.round(ws * ratios)
    out = []
    for rw, rh in zip(ws, hs):
        cw, ch = rw, rh  # _whctrs of the ratio anchor: same centre
        out.append(
            _corners(cw * np.asarray(scales, np.float64), ch * np.asarray(scales, np.float64), x, y)
        )
    return np.vstack(out)


def max_rois(s: ProposalSettings, in_shapes: list[Shape]) -> int:
    """The most ROIs the settings allow for these bottoms."""
    anchors = in_shapes[0][2] * in_shapes[0][3] * len(s.anchors)
    count = anchors if s.pre_nms_topn <= 0 else min(anchors, s.pre_nms_topn)
    return count if s.post_nms_topn <= 0 else min(count, s.post_nms_topn)


def check_bottoms(s: ProposalSettings, inputs: list[Shape]) -> None:
    scores, deltas, info = inputs
    a = len(s.anchors)
    if len(scores) != 4 or len(deltas) != 4:
        raise ValueError("the scores and box deltas must be 4-D (1 x 2A x H x W, 1 x 4A x H x W)")
    if scores[0] != 1 or deltas[0] != 1:
        raise ValueError("Only single item batches are supported (py-faster-rcnn's proposal layer)")
    if scores[1] != 2 * a or deltas[1] != 4 * a or scores[2:] != deltas[2:]:
        raise ValueError(
            f"{a} anchors need 1 x {2 * a} x H x W scores and 1 x {4 * a} x H x W deltas; got "
            f"{list(scores)} and {list(deltas)}"
        )
    if math.prod(info) < 3:
        raise ValueError(f"im_info holds height, width and scale; got {list(info)}")


@register("Proposal", "shape")
def _proposal(node: Node, inputs: list[Shape]) -> LayerShapes:
    s = proposal_settings(node.param.proposal_param)
    check_bottoms(s, inputs)
    return LayerShapes([(1, 5), (1, 1)][: len(node.outputs)], [])


def image_info(node: Node, bottom: int, shape: Shape, image: Shape | None, rng) -> np.ndarray:
    """``im_info`` for the third bottom: the image's height and width, scale 1."""
    if bottom != 2:
        return None  # type: ignore[return-value]
    height, width = (image[2], image[3]) if image else (224, 224)
    info = np.zeros(math.prod(shape), dtype=np.float32)
    info[:3] = (height, width, 1.0)
    return info.reshape(shape)


def box_error_gain(node: Node, value) -> dict[int, float]:
    """How far a box corner can move per unit error in its deltas (bottom 1): the centre moves
    by the anchor's size times the error of dx, the half-width by half the box's size times the
    error of dw (``bbox_transform_inv``: w = anchor_w x exp(dw)). Box sizes from the judge's
    ROIs where kept, else twice the largest anchor."""
    try:
        anchors = proposal_settings(node.param.proposal_param).anchors
    except ValueError:
        return {}
    largest_anchor = float(np.max(anchors[:, 2:] - anchors[:, :2] + 1.0, initial=1.0))
    rois = value(node.outputs[0]) if node.outputs else None
    if rois is not None and np.ndim(rois) == 2 and np.shape(rois)[1] == 5 and len(rois):
        boxes = np.asarray(rois, dtype=np.float64)
        largest_box = float(np.max(boxes[:, 3:5] - boxes[:, 1:3] + 1.0, initial=1.0))
    else:
        largest_box = 2.0 * largest_anchor
    return {1: largest_anchor + 0.5 * largest_box}


def _opencv(node: Node) -> str | None:
    """Measured on OpenCV 4.14: the same boxes, then zero rows up to post_nms_topn."""
    reason = "OpenCV pads the ROIs with zero rows to post_nms_topn"
    if node.param.proposal_param.min_size > 0:
        reason += " and keeps boxes under min_size"
    return reason


def _no_backward(node: Node, bottom: int) -> str | None:
    return "the proposal layer has no backward (py-faster-rcnn: pass)"


describe(
    "Proposal",
    origin="py-faster-rcnn's proposal layer as OpenCV's built-in type",
    param_message="proposal_param",
    bottoms=3,
    tops=(1, 2),
    varying_rows=True,
    row_bound=lambda node, ins: max_rois(proposal_settings(node.param.proposal_param), ins),
    row_set=lambda node: True,
    error_gain=box_error_gain,
    input_values=image_info,
    mixes_batch=lambda node, shape: True,
    opencv_tested=True,
    opencv_deviation=_opencv,
    no_backward=_no_backward,
    validate=lambda layer: proposal_settings(layer.proposal_param) and None,
)
