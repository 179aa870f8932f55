"""Shape rules and shared arithmetic for the SSD fork's layers (W. Liu's Caffe, branch ``ssd``):
Permute, Normalize, PriorBox and DetectionOutput.

Everything both back ends must agree on lives here: the completed Permute order, the prior boxes
(PriorBox depends only on the shapes of its bottoms, so it is computed once, in numpy, with
Caffe's float rounding) and the DetectionOutput settings as Caffe's ``LayerSetUp`` reads them.

DetectionOutput's row count depends on the data: its top is 1 x 1 x R x 7 where R is the number
of detections kept over the whole batch (or one placeholder row per image when nothing survives).
Like Caffe's own ``Reshape``, the shape rule reports the placeholder shape (1, 1, 1, 7); both back
ends return the true R at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir.graph import Graph, Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from ._synthesis import positive

CodeType = caffe_pb2.PriorBoxParameter.CodeType
FLT_MAX = float(np.finfo(np.float32).max)
ROW = 7  # [image_id, label, score, xmin, ymin, xmax, ymax]


# --- Permute ---------------------------------------------------------------------------------


def permute_order(param: caffe_pb2.PermuteParameter, ndim: int) -> tuple[int, ...]:
    """Caffe's order: the listed axes first, then every unlisted axis in its original order."""
    listed = [int(a) for a in param.order]
    for axis in listed:
        if axis >= ndim:
            raise ValueError(f"permute order {axis} is out of range for a {ndim}-D bottom")
    if len(set(listed)) != len(listed):
        raise ValueError(f"permute order {listed} repeats an axis")
    return (*listed, *(a for a in range(ndim) if a not in listed))


@register("Permute", "shape")
def _permute(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    order = permute_order(node.param.permute_param, len(shape))
    return LayerShapes([tuple(shape[a] for a in order)], [])


# --- Normalize -------------------------------------------------------------------------------


# Two forks define Normalize. SSD's (``norm_param``, field 206): L2 over each image or each
# position, then a learnt scale (one blob). happynear/caffe-windows' (NormFace, AM-Softmax:
# ``normalize_param``, field 214): no blob, ``x / sqrt(sum_c x^2 + 1e-6)`` ("L2") or
# ``x / (sum_c |x| + 1e-6)`` ("L1") at each position over the channels, and an optional second
# top holding that norm (N x 1 x H x W). The ``dialect`` fact settles a layer that names neither
# message from its tops and its weights' blob count.
HAPPYNEAR_EPS = 1e-6  # normalize_layer.cpp adds it to the sum (of squares for "L2")
HAPPYNEAR_TYPES = ("L2", "L1")


def happynear_normalize(param: caffe_pb2.LayerParameter) -> bool:
    """True for happynear/caffe-windows' Normalize (its ``normalize_param`` set)."""
    return param.HasField("normalize_param")


def _normalize_dialect(layer: caffe_pb2.LayerParameter, blobs: int | None) -> str | None:
    if happynear_normalize(layer) or layer.HasField("norm_param"):
        return None
    if len(layer.top) == 2 or blobs == 0:
        why = "a second top (the norm)" if len(layer.top) == 2 else "weights with no blob"
        layer.normalize_param.normalize_type = layer.normalize_param.normalize_type  # set it
        return f"it has {why}: happynear/caffe-windows' Normalize (L2 over channels, no scale)"
    return None


def _normalize_fields(layer: caffe_pb2.LayerParameter) -> None:
    """The fork's LayerSetUp takes any string and its Forward aborts on others than L2/L1."""
    if not happynear_normalize(layer):
        if len(layer.top) != 1:
            raise ValueError("SSD's Normalize (norm_param) has exactly 1 top")
        return
    if layer.HasField("norm_param"):
        raise ValueError("sets both SSD's norm_param and happynear's normalize_param")
    kind = layer.normalize_param.normalize_type
    if kind not in HAPPYNEAR_TYPES:
        raise ValueError(f'normalize_param.normalize_type "{kind}" is not "L2" or "L1"')


def _legacy_4d(shape: Shape) -> Shape:
    """Caffe's num/channels/height/width view of a blob of at most 4 axes (missing ones 1)."""
    if not 2 <= len(shape) <= 4:
        raise ValueError(f"Normalize reads its bottom as N x C x H x W; got {len(shape)} axes")
    return (*shape, *(1,) * (4 - len(shape)))


@register("Normalize", "shape")
def _normalize(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    legacy = _legacy_4d(shape)
    if happynear_normalize(node.param):
        # top[0]->Reshape(num, channels, height, width): a 2-D bottom gives N x C x 1 x 1.
        tops = [legacy, (legacy[0], 1, *legacy[2:])][: len(node.outputs)]
        return LayerShapes(tops, [])
    p = node.param.norm_param
    return LayerShapes([shape], [() if p.channel_shared else (shape[1],)])


# --- PriorBox --------------------------------------------------------------------------------


def _aspect_ratios(p: caffe_pb2.PriorBoxParameter) -> list[np.float32]:
    """1, then each new ratio (and its inverse with ``flip``); near-duplicates (1e-6) dropped."""
    ratios = [np.float32(1.0)]
    for value in p.aspect_ratio:
        ar = np.float32(value)
        if ar <= 0:
            raise ValueError(f"aspect_ratio {value:g} must be positive")
        if any(abs(float(ar) - float(r)) < 1e-6 for r in ratios):
            continue
        ratios.append(ar)
        if p.flip:
            ratios.append(np.float32(1.0 / float(ar)))
    return ratios


@dataclass(frozen=True)
class PriorSpecs:
    """Every prior at one location: its centre shift in pixels (added to the cell centre in
    float32), which of the two cell-centre rows it uses (TextBoxes' second prior of each kind
    sits half a cell lower) and its half width and height (float32 values held in doubles)."""

    shift_x: np.ndarray
    shift_y: np.ndarray
    lower: np.ndarray  # bool: centred at (h + 1) * step_h (TextBoxes) instead of (h + offset)
    half_w: np.ndarray
    half_h: np.ndarray


def _checked_sizes(p: caffe_pb2.PriorBoxParameter) -> None:
    if not p.min_size:
        raise ValueError("PriorBox needs at least one min_size")
    if any(m <= 0 for m in p.min_size):
        raise ValueError("min_size must be positive")
    if p.max_size and len(p.max_size) != len(p.min_size):
        raise ValueError(f"{len(p.max_size)} max_size values for {len(p.min_size)} min_size")
    if any(mx <= mn for mn, mx in zip(p.min_size, p.max_size)):
        raise ValueError("each max_size must be greater than its min_size")


def _ratio_boxes(low: float, ratios: list[np.float32]) -> list[tuple[float, float]]:
    sizes = []
    for ar in ratios:
        if abs(float(ar) - 1.0) < 1e-6:
            continue
        root = math.sqrt(float(ar))
        sizes.append((float(np.float32(low * root)), float(np.float32(low / root))))
    return sizes


def faceboxes_count(p: caffe_pb2.PriorBoxParameter) -> int:
    """The prior count sfzhang15/FaceBoxes' ``LayerSetUp`` declares: 21 whenever three min_size
    values are given (its densified 32/64/128 anchors), else ratios x min sizes, plus one per
    max_size."""
    declared = 21 if len(p.min_size) == 3 else len(_aspect_ratios(p)) * len(p.min_size)
    return declared + len(p.max_size)


def prior_specs(p: caffe_pb2.PriorBoxParameter) -> PriorSpecs:
    """The priors of one location under the layout ``p.layout`` names (see caffe.proto)."""
    _checked_sizes(p)
    ratios = _aspect_ratios(p)
    rows: list[tuple[float, float, bool, float, float]] = []  # shift x, shift y, lower, w, h
    Layout = caffe_pb2.PriorBoxParameter.Layout
    if p.layout == Layout.TEXTBOXES:
        # MhLiao/TextBoxes: one min_size (a float, not truncated), every prior twice: at the
        # cell centre and half a cell lower.
        if len(p.min_size) != 1 or len(p.max_size) > 1:
            raise ValueError("TextBoxes' PriorBox takes one min_size and at most one max_size")
        moved = [
            f
            for f in ("step", "step_h", "step_w", "img_size", "img_h", "img_w", "offset")
            if p.HasField(f)
        ]
        if moved:
            raise ValueError(f"TextBoxes' PriorBox has no {moved[0]} field")
        low = float(np.float32(p.min_size[0]))
        sizes = [(low, low)]
        if p.max_size:
            side = float(np.float32(math.sqrt(float(np.float32(low * p.max_size[0])))))
            sizes.append((side, side))
        sizes += _ratio_boxes(low, ratios)
        for w, h in sizes:
            rows += [(0.0, 0.0, False, w / 2.0, h / 2.0), (0.0, 0.0, True, w / 2.0, h / 2.0)]
    else:
        for index, min_value in enumerate(p.min_size):
            low = int(min_value)
            if p.layout == Layout.FACEBOXES:
                # sfzhang15/FaceBoxes: the 32 and 64 anchors are densified (4 x 4 shifted by 8
                # pixels, 2 x 2 by 16, rows outer); its ratio-1 boxes span min_size - 1.
                half = (low - 1) / 2.0
                dense = {32: (range(-2, 2), 8), 64: (range(-1, 1), 16)}.get(low)
                if dense is None:
                    rows.append((0.0, 0.0, False, half, half))
                else:
                    steps, pixels = dense
                    rows += [
                        (float(j * pixels), float(i * pixels), False, half, half)
                        for i in steps
                        for j in steps
                    ]
            else:
                rows.append((0.0, 0.0, False, low / 2.0, low / 2.0))
            if p.max_size:
                side = float(np.float32(math.sqrt(low * int(p.max_size[index]))))
                rows.append((0.0, 0.0, False, side / 2.0, side / 2.0))
            rows += [(0.0, 0.0, False, w / 2.0, h / 2.0) for w, h in _ratio_boxes(low, ratios)]
        if p.layout == Layout.FACEBOXES and len(rows) != faceboxes_count(p):
            raise ValueError(
                f"FaceBoxes' PriorBox declares {faceboxes_count(p)} priors per location but "
                f"makes {len(rows)} from these min sizes (Caffe would write past its top)"
            )
    table = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return PriorSpecs(table[:, 0], table[:, 1], table[:, 2].astype(bool), table[:, 3], table[:, 4])


def _variances(p: caffe_pb2.PriorBoxParameter) -> list[float]:
    values = [float(np.float32(v)) for v in p.variance]
    if len(values) not in (0, 1, 4):
        raise ValueError(f"give 1 or 4 variance values, not {len(values)}")
    if any(v <= 0 for v in values):
        raise ValueError("variance values must be positive")
    return values or [float(np.float32(0.1))]  # Caffe's C++ default when none is given


def _pair(p: object, plain: str, name: str) -> tuple[float, float] | None:
    """``name_h``/``name_w`` (both, positive) or ``plain`` for both axes; None when unset."""
    if p.HasField(f"{name}_h") or p.HasField(f"{name}_w"):  # type: ignore[attr-defined]
        if p.HasField(plain):  # type: ignore[attr-defined]
            raise ValueError(f"give {plain} or {name}_h/{name}_w, not both")
        h, w = getattr(p, f"{name}_h"), getattr(p, f"{name}_w")
        if h <= 0 or w <= 0:
            raise ValueError(f"{name}_h and {name}_w must both be given and positive")
        return float(h), float(w)
    if p.HasField(plain):  # type: ignore[attr-defined]
        value = getattr(p, plain)
        if value <= 0:
            raise ValueError(f"{plain} must be positive")
        return float(value), float(value)
    return None


def _prior_geometry(
    p: caffe_pb2.PriorBoxParameter, inputs: list[Shape]
) -> tuple[int, int, int, int]:
    """Feature-map height/width and image height/width for one PriorBox layer."""
    if len(inputs) not in (1, 2) or any(len(s) != 4 for s in inputs):
        raise ValueError("PriorBox takes a 4-D feature map and (usually) the 4-D image")
    layer_h, layer_w = inputs[0][2], inputs[0][3]
    image = _pair(p, "img_size", "img")
    if image is None:
        if len(inputs) != 2:
            raise ValueError("without img_size/img_h/img_w, PriorBox needs the image as bottom 2")
        image = (float(inputs[1][2]), float(inputs[1][3]))
    return layer_h, layer_w, int(image[0]), int(image[1])


def prior_boxes(p: caffe_pb2.PriorBoxParameter, inputs: list[Shape]) -> np.ndarray:
    """PriorBox's top, (1, 2, H * W * priors * 4) float32: boxes, then their variances.

    Centres are computed in float32 and corners in double then rounded, as Caffe's CPU forward
    does; the result agrees with Caffe's to float32 rounding (OpenCV's: within 1.2e-7)."""
    layer_h, layer_w, img_h, img_w = _prior_geometry(p, inputs)
    specs = prior_specs(p)
    step = _pair(p, "step", "step")
    if step is None:
        step_h = np.float32(img_h) / np.float32(layer_h)
        step_w = np.float32(img_w) / np.float32(layer_w)
    else:
        step_h, step_w = np.float32(step[0]), np.float32(step[1])
    rows, cols = np.arange(layer_h), np.arange(layer_w)
    if p.layout == caffe_pb2.PriorBoxParameter.Layout.TEXTBOXES:
        # (w + 0.5) * step in double, stored as float; the second row at (h + 1.0) * step.
        cx = (cols + 0.5) * np.float64(step_w)
        cy = np.stack([(rows + 0.5) * np.float64(step_h), (rows + 1.0) * np.float64(step_h)])
        cx, cy = cx.astype(np.float32), cy.astype(np.float32)
    else:
        offset = np.float32(p.offset)
        cx = (cols.astype(np.float32) + offset) * step_w
        cy = np.stack([(rows.astype(np.float32) + offset) * step_h] * 2)
    priors = len(specs.half_w)
    # centre + shift in float32 (C++: float + int), then the corners in double
    px = (cx[None, :, None] + specs.shift_x.astype(np.float32)).astype(np.float64)
    py = np.where(specs.lower, cy[1][:, None], cy[0][:, None])[:, None, :]
    py = (py + specs.shift_y.astype(np.float32)).astype(np.float64)
    shape = (layer_h, layer_w, priors)
    boxes = np.stack(
        [
            np.broadcast_to((px - specs.half_w) / img_w, shape),
            np.broadcast_to((py - specs.half_h) / img_h, shape),
            np.broadcast_to((px + specs.half_w) / img_w, shape),
            np.broadcast_to((py + specs.half_h) / img_h, shape),
        ],
        axis=-1,
    ).astype(np.float32)
    if _clips(p):
        boxes = np.clip(boxes, np.float32(0), np.float32(1))
    boxes = boxes.reshape(-1)
    variance = np.resize(np.array(_variances(p), dtype=np.float32), boxes.size)
    return np.stack([boxes, variance])[None]


def _clips(p: caffe_pb2.PriorBoxParameter) -> bool:
    """``clip``; unset, TextBoxes' caffe.proto defaults it to true (BVLC's SSD: false)."""
    if p.layout == caffe_pb2.PriorBoxParameter.Layout.TEXTBOXES and not p.HasField("clip"):
        return True
    return bool(p.clip)


@register("PriorBox", "shape")
def _prior_box(node: Node, inputs: list[Shape]) -> LayerShapes:
    p = node.param.prior_box_param
    layer_h, layer_w, _, _ = _prior_geometry(p, inputs)
    _variances(p)
    _pair(p, "step", "step")
    count = layer_h * layer_w * len(prior_specs(p).half_w) * 4
    if count <= 0:
        raise ValueError("the feature map is empty")
    return LayerShapes([(1, 2, count)], [])


# --- DetectionOutput -------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionSettings:
    """DetectionOutput's parameters as Caffe's ``LayerSetUp`` resolves them."""

    num_classes: int
    share_location: bool
    background_label_id: int
    code_type: int  # PriorBoxParameter.CORNER / CENTER_SIZE / CORNER_SIZE
    variance_encoded_in_target: bool
    keep_top_k: int  # <= -1: no limit across classes
    confidence_threshold: float  # scores must be strictly greater
    nms_threshold: float
    eta: float
    top_k: int  # -1: no limit on NMS candidates per class

    @property
    def num_loc_classes(self) -> int:
        return 1 if self.share_location else self.num_classes

    @property
    def foreground(self) -> list[int]:
        """Labels that get detections: every class but the background label."""
        return [c for c in range(self.num_classes) if c != self.background_label_id]

    @property
    def adaptive(self) -> bool:
        """True when ``eta`` actually lowers the NMS threshold (it only acts above 0.5)."""
        return self.eta < 1 and self.nms_threshold > 0.5

    @property
    def never_detects(self) -> bool:
        return self.top_k == 0 or self.keep_top_k == 0 or not self.foreground

    def thresholds(self, count: int) -> np.ndarray:
        """float32 NMS threshold for a candidate after ``0..count`` kept boxes (Caffe multiplies
        by eta after each kept box while the threshold is above 0.5); constant tail dropped."""
        values = [np.float32(self.nms_threshold)]
        eta = np.float32(self.eta)
        while self.eta < 1 and values[-1] > 0.5 and len(values) <= count:
            values.append(np.float32(values[-1] * eta))
        return np.array(values, dtype=np.float32)


def detection_settings(param: caffe_pb2.DetectionOutputParameter) -> DetectionSettings:
    """Read and validate the parameters (Caffe CHECKs the same things at setup)."""
    if not param.HasField("num_classes") or param.num_classes <= 0:
        raise ValueError("num_classes must be set and positive")
    nms = param.nms_param
    if nms.nms_threshold < 0:
        raise ValueError(f"nms_threshold {nms.nms_threshold:g} must not be negative")
    if not 0 < nms.eta <= 1:
        raise ValueError(f"eta {nms.eta:g} must be in (0, 1]")
    if param.share_location and param.background_label_id == -1:
        # Caffe skips decoding the shared boxes (their label, -1, is "background") and aborts.
        raise ValueError("share_location with background_label_id -1 is rejected by Caffe")
    has_conf = param.HasField("confidence_threshold")
    return DetectionSettings(
        num_classes=int(param.num_classes),
        share_location=bool(param.share_location),
        background_label_id=int(param.background_label_id),
        code_type=int(param.code_type),
        variance_encoded_in_target=bool(param.variance_encoded_in_target),
        keep_top_k=int(param.keep_top_k),
        # Unset means every score counts: Caffe compares with -FLT_MAX.
        confidence_threshold=float(np.float32(param.confidence_threshold))
        if has_conf
        else -FLT_MAX,
        nms_threshold=float(np.float32(nms.nms_threshold)),
        eta=float(np.float32(nms.eta)),
        top_k=int(nms.top_k) if nms.HasField("top_k") else -1,
    )


def _fork_priors(predicted: int, priors: int) -> str:
    """Why the heads predict more boxes than the PriorBox layers make. The loader has already
    tried the forks whose PriorBox code makes more priors from the very same fields (TextBoxes,
    FaceBoxes: settle_prior_layouts); reaching here, none of them makes this count either."""
    if predicted <= priors:
        return ""
    return (
        f": the heads predict {predicted} boxes, more than BVLC's PriorBox makes from these "
        "fields, and neither TextBoxes' nor FaceBoxes' PriorBox code makes that many; the net "
        "was written for another Caffe fork's PriorBox"
    )


def num_priors(prior_shape: Shape) -> int:
    """Caffe reads the prior count from the legacy ``height()`` of the prior blob, over 4."""
    height = prior_shape[2] if len(prior_shape) > 2 else 1
    return height // 4


@register("DetectionOutput", "shape")
def _detection_output(node: Node, inputs: list[Shape]) -> LayerShapes:
    if len(inputs) not in (3, 4):
        raise ValueError(
            "DetectionOutput takes loc, conf and prior bottoms (and an optional image)"
        )
    s = detection_settings(node.param.detection_output_param)
    loc, conf, prior = inputs[:3]
    if not loc or not conf:
        raise ValueError("loc and conf need a batch axis; a 0-D bottom has none")
    if loc[0] != conf[0]:
        raise ValueError(f"loc and conf disagree on the batch: {loc[0]} vs {conf[0]}")
    priors = num_priors(prior)
    if priors * s.num_loc_classes * 4 != math.prod(loc[1:]):
        raise ValueError(
            f"loc holds {math.prod(loc[1:])} values per image, expected "
            f"{priors} priors x {s.num_loc_classes} x 4"
            + _fork_priors(math.prod(loc[1:]) // (s.num_loc_classes * 4), priors)
        )
    if priors * s.num_classes != math.prod(conf[1:]):
        raise ValueError(
            f"conf holds {math.prod(conf[1:])} values per image, expected "
            f"{priors} priors x {s.num_classes} classes"
            + _fork_priors(math.prod(conf[1:]) // max(s.num_classes, 1), priors)
        )
    if math.prod(prior) < 2 * priors * 4:
        raise ValueError("the prior blob must hold boxes and their variances")
    return LayerShapes([(1, 1, 1, ROW)], [])


_PRIOR_FLOATS = ("min_size", "max_size", "aspect_ratio", "variance", "step", "step_h", "step_w")


def _prior_box_fields(layer: caffe_pb2.LayerParameter) -> None:
    """Every size, ratio, step and variance a finite number (an infinite aspect ratio with
    ``flip`` would give boxes of width 0 and infinite height), and a finite offset."""
    p = layer.prior_box_param
    for name in _PRIOR_FLOATS:
        values = getattr(p, name)
        for value in values if not isinstance(values, float) else [values]:
            if not math.isfinite(value):
                raise ValueError(f"prior_box_param.{name} {value:g} must be a finite number")
    if not math.isfinite(p.offset):
        raise ValueError(f"prior_box_param.offset {p.offset:g} must be a finite number")


def _detection_fields(layer: caffe_pb2.LayerParameter) -> None:
    """The thresholds are compared with scores and overlaps; NaN would silently keep nothing."""
    p = layer.detection_output_param
    for name, value in (
        ("confidence_threshold", p.confidence_threshold),
        ("nms_param.nms_threshold", p.nms_param.nms_threshold),
        ("nms_param.eta", p.nms_param.eta),
    ):
        if math.isnan(value):
            raise ValueError(f"detection_output_param.{name} is NaN")


def _prior_box_opencv(node: Node) -> str | None:
    """OpenCV 4's PriorBox deviations from the SSD fork (measured in tests/converters)."""
    p = node.param.prior_box_param
    if p.layout != caffe_pb2.PriorBoxParameter.Layout.SSD:
        return "OpenCV's PriorBox is the SSD fork's, not TextBoxes' or FaceBoxes'"
    if not p.HasField("clip"):
        return "OpenCV clips the boxes when clip is unset (Caffe's default is not to)"
    if any(p.HasField(f) for f in ("img_size", "img_h", "img_w")):
        return "OpenCV ignores img_size/img_h/img_w"
    if any(v != int(v) for v in (*p.min_size, *p.max_size)):
        return "OpenCV keeps fractional min/max sizes (Caffe truncates them)"
    return None


describe(
    "PriorBox",
    param_message="prior_box_param",
    shape_only=True,
    opencv_tested=True,
    bottoms=(1, 2),
    tops=1,
    validate=_prior_box_fields,
    opencv_deviation=_prior_box_opencv,
)


def _detection_has_no_backward(node: Node, bottom: int) -> str | None:
    return "DetectionOutput has no backward (Caffe: Not Implemented Yet)"


def max_detections(node: Node, in_shapes: list[Shape]) -> int:
    """The most rows DetectionOutput can give: top_k candidates per foreground class, cut to
    keep_top_k, per image (at least one row per image, the "nothing found" row)."""
    s = detection_settings(node.param.detection_output_param)
    batch, priors = in_shapes[0][0], num_priors(in_shapes[2])
    per_class = priors if s.top_k < 0 else min(s.top_k, priors)
    rows = per_class * len(s.foreground)
    if s.keep_top_k > -1:
        rows = min(rows, s.keep_top_k)
    return max(batch * rows, batch)


def decoding_scratch(node: Node, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
    """Decoded boxes and scores for every image, prior and class, and the candidates' order."""
    s = detection_settings(node.param.detection_output_param)
    batch, priors = in_shapes[0][0], num_priors(in_shapes[2])
    return batch * priors * (s.num_loc_classes * 4 + s.num_classes) * 4 + priors * 8


describe(
    "DetectionOutput",
    param_message="detection_output_param",
    detections=max_detections,
    workspace=decoding_scratch,
    opencv_tested=True,
    bottoms=(3, 4),
    tops=1,
    validate=_detection_fields,
    no_backward=_detection_has_no_backward,
)


def _normalize_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    """The SSD fork's NormalizeLayer: ``scale_filler``, or a constant 1 when none is given;
    happynear's has no blob."""
    if happynear_normalize(layer):
        return []
    p = layer.norm_param
    if p.HasField("scale_filler"):
        return [p.scale_filler]
    return [caffe_pb2.FillerParameter(type="constant", value=1.0)]


def _normalize_opencv(node: Node) -> str | None:
    if happynear_normalize(node.param):
        return "reads happynear's Normalize as SSD's (across_spatial by default, no eps of 1e-6)"
    return None


describe(
    "Normalize",
    origin="W. Liu's SSD (norm_param, a scale); happynear/caffe-windows (normalize_param, no blob)",
    param_message="norm_param",
    dialect=_normalize_dialect,
    validate=_normalize_fields,
    fillers=_normalize_fillers,
    starting_values=positive(10.0, 20.0),
    opencv_deviation=_normalize_opencv,
    opencv_tested=True,
    bottoms=1,
    tops=(1, 2),
)
describe("Permute", param_message="permute_param", opencv_tested=True, bottoms=1, tops=1)


# --- PriorBox layouts of forks ---------------------------------------------------------------

_LAYOUT_NAMES = {
    caffe_pb2.PriorBoxParameter.Layout.TEXTBOXES: "MhLiao/TextBoxes' PriorBox (each prior "
    "also half a cell lower)",
    caffe_pb2.PriorBoxParameter.Layout.FACEBOXES: "sfzhang15/FaceBoxes' PriorBox (densified "
    "32/64 anchors, 21 priors for three min sizes)",
}
_PASS_THROUGH = {"Concat", "Flatten", "Reshape"}


def _prior_sources(graph: Graph, consumer: int, value: str) -> list[Node] | None:
    """The PriorBox layers whose tops make up ``value`` (through Concat/Flatten/Reshape), as
    seen by node ``consumer``; None when something else produces part of it."""
    for index in range(consumer - 1, -1, -1):
        node = graph.nodes[index]
        if value not in node.outputs:
            continue
        if node.type == "PriorBox":
            return [node]
        if node.type not in _PASS_THROUGH:
            return None
        found: list[Node] = []
        for bottom in node.inputs:
            more = _prior_sources(graph, index, bottom)
            if more is None:
                return None
            found += more
        return found
    return None


def _layout_count(node: Node, shape: Shape, layout: int) -> int | None:
    """How many priors the layer makes under ``layout``; None when the fork's code refuses."""
    p = caffe_pb2.PriorBoxParameter()
    p.CopyFrom(node.param.prior_box_param)
    p.layout = layout  # type: ignore[assignment]
    try:
        per_cell = len(prior_specs(p).half_w)
    except ValueError:
        return None
    return shape[2] * shape[3] * per_cell


def settle_prior_layouts(
    net: caffe_pb2.NetParameter, graph: Graph, shapes: dict[str, Shape | None]
) -> list[str]:
    """Which fork's PriorBox each DetectionOutput's priors come from, when BVLC/SSD's count
    disagrees with the heads and exactly one fork's code makes the predicted count (the forks
    read the very same fields; see caffe.proto's PriorBoxParameter.layout). Records the answer
    in ``net``'s layers; returns one note per layer changed."""
    chosen: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        if node.type != "DetectionOutput" or len(node.inputs) < 3:
            continue
        loc, conf = shapes.get(node.inputs[0]), shapes.get(node.inputs[1])
        sources = _prior_sources(graph, index, node.inputs[2])
        if loc is None or conf is None or not sources:
            continue
        if any(n.param.prior_box_param.layout for n in sources):
            continue
        try:
            s = detection_settings(node.param.detection_output_param)
        except ValueError:
            continue
        predicted = math.prod(loc[1:]) / (s.num_loc_classes * 4)
        if predicted != math.prod(conf[1:]) / s.num_classes:
            continue
        feature = [shapes.get(n.inputs[0]) for n in sources]
        if any(f is None or len(f) != 4 for f in feature):
            continue
        matches = []
        for layout in _LAYOUT_NAMES:
            counts = [_layout_count(n, f, layout) for n, f in zip(sources, feature)]  # type: ignore[arg-type]
            if all(c is not None for c in counts) and sum(counts) == predicted:  # type: ignore[arg-type]
                matches.append(layout)
        bvlc = [_layout_count(n, f, 0) for n, f in zip(sources, feature)]  # type: ignore[arg-type]
        if len(matches) != 1 or (None not in bvlc and sum(bvlc) == predicted):  # type: ignore[arg-type]
            continue
        for n in sources:
            chosen[n.param.name] = matches[0]
    notes = []
    for layer in net.layer:
        if layer.type == "PriorBox" and layer.name in chosen:
            layer.prior_box_param.layout = chosen[layer.name]  # type: ignore[assignment]
            notes.append(
                f'layer "{layer.name}" (PriorBox): {_LAYOUT_NAMES[chosen[layer.name]]}, '
                "settled from the number of boxes its DetectionOutput's heads predict"
            )
    return notes
