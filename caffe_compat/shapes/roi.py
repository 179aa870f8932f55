"""Shape rules and facts of the ROI pooling layers: ``ROIPooling`` (Fast/Faster R-CNN,
rbgirshick/caffe-fast-rcnn's ``roi_pooling_layer.cpp``) and ``PSROIPooling`` (R-FCN,
daijifeng001/caffe-rfcn's ``psroi_pooling_layer.cu``).

Both read a feature map ``N x C x H x W`` and ROIs ``R x 5`` (``[image, x1, y1, x2, y2]`` in the
input image's pixels, multiplied by ``spatial_scale`` to reach the feature map) and give one
pooled map per ROI: ``R x C x pooled_h x pooled_w`` (max) or ``R x output_dim x group_size x
group_size`` (position-sensitive average over channel ``(c * group_size + i) * group_size + j``).
The ROI count R is the top's first axis: Proposal's ROIs change it at run time.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register


def roi_pooling_settings(p: caffe_pb2.ROIPoolingParameter) -> tuple[int, int, float]:
    """(pooled_h, pooled_w, spatial_scale) as LayerSetUp reads them (both sizes CHECKed > 0)."""
    if p.pooled_h <= 0 or p.pooled_w <= 0:
        raise ValueError("roi_pooling_param.pooled_h and pooled_w must be > 0")
    if not math.isfinite(p.spatial_scale):
        raise ValueError("roi_pooling_param.spatial_scale must be a finite number")
    return int(p.pooled_h), int(p.pooled_w), float(np.float32(p.spatial_scale))


def roi_pad_ratio(p: caffe_pb2.ROIPoolingParameter) -> float:
    """MS-CNN's ``pad_ratio`` (float32; 0 in caffe-fast-rcnn, which has no such field)."""
    if not math.isfinite(p.pad_ratio):
        raise ValueError("roi_pooling_param.pad_ratio must be a finite number")
    return float(np.float32(p.pad_ratio))


def padded_rois(rois: np.ndarray, ratio: float) -> np.ndarray:
    """MS-CNN's ROIs widened by ``ratio`` of their size (+1) on each side, in the fork's
    float32 steps: ``pad = (x2 - x1 + 1) * ratio``, ``x1 - pad``, ``x2 + pad`` (y likewise);
    the corners are then scaled and rounded as caffe-fast-rcnn's."""
    r = rois.astype(np.float32)
    if ratio == 0:
        return r
    one, share = np.float32(1), np.float32(ratio)
    pad_w = ((r[:, 3] - r[:, 1]) + one) * share
    pad_h = ((r[:, 4] - r[:, 2]) + one) * share
    out = r.copy()
    out[:, 1], out[:, 3] = r[:, 1] - pad_w, r[:, 3] + pad_w
    out[:, 2], out[:, 4] = r[:, 2] - pad_h, r[:, 4] + pad_h
    return out


def psroi_settings(p: caffe_pb2.PSROIPoolingParameter) -> tuple[int, int, float]:
    """(output_dim, group_size, spatial_scale): R-FCN declares all three required."""
    for name in ("spatial_scale", "output_dim", "group_size"):
        if not p.HasField(name):
            raise ValueError(f"psroi_pooling_param.{name} is required (R-FCN's proto)")
    if p.output_dim <= 0:
        raise ValueError("psroi_pooling_param.output_dim must be > 0")
    if p.group_size <= 0:
        raise ValueError("psroi_pooling_param.group_size must be > 0")
    if not math.isfinite(p.spatial_scale):
        raise ValueError("psroi_pooling_param.spatial_scale must be a finite number")
    return int(p.output_dim), int(p.group_size), float(np.float32(p.spatial_scale))


def _roi_rows(shape: Shape) -> int:
    """Caffe reads ``num()`` ROIs of ``channels * height * width == 5`` values each."""
    if not shape or math.prod(shape[1:]) != 5:
        raise ValueError(f"the ROI bottom must be R x 5 ([image, x1, y1, x2, y2]), not {shape}")
    return shape[0]


@register("ROIPooling", "shape")
def _roi_pooling(node: Node, inputs: list[Shape]) -> LayerShapes:
    data, rois = inputs
    if len(data) != 4:
        raise ValueError(f"ROIPooling reads a 4-D feature map, not {list(data)}")
    pooled_h, pooled_w, _ = roi_pooling_settings(node.param.roi_pooling_param)
    return LayerShapes([(_roi_rows(rois), data[1], pooled_h, pooled_w)], [])


@register("PSROIPooling", "shape")
def _psroi_pooling(node: Node, inputs: list[Shape]) -> LayerShapes:
    data, rois = inputs
    if len(data) != 4:
        raise ValueError(f"PSROIPooling reads a 4-D feature map, not {list(data)}")
    dim, group, _ = psroi_settings(node.param.psroi_pooling_param)
    if data[1] != dim * group * group:
        raise ValueError(
            f"the feature map has {data[1]} channels; output_dim x group_size^2 = "
            f"{dim * group * group}"
        )
    return LayerShapes([(_roi_rows(rois), dim, group, group)], [])


def random_rois(count: int, images: int, height: int, width: int, rng) -> np.ndarray:
    """``count`` ROIs ``[image, x1, y1, x2, y2]`` inside an ``height x width`` image: corners
    in [0, size - 1] with x1 <= x2 and y1 <= y2, a few of them a single pixel wide."""
    image = rng.integers(0, max(images, 1), count).astype(np.float64)
    xs = np.sort(rng.uniform(0, width - 1, (count, 2)), axis=1)
    ys = np.sort(rng.uniform(0, height - 1, (count, 2)), axis=1)
    rois = np.stack([image, xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)
    rois[::7, 3] = rois[::7, 1]  # degenerate boxes: Caffe forces them to one bin's size
    return rois.astype(np.float32)


def _roi_input(node: Node, bottom: int, shape: Shape, image: Shape | None, rng) -> np.ndarray:
    """Valid ROIs for bottom 1 when it is a net input (Fast R-CNN's ``rois``)."""
    if bottom != 1:
        return None  # type: ignore[return-value]
    height, width = (image[2], image[3]) if image else (224, 224)
    images = image[0] if image else 1
    return random_rois(shape[0], images, height, width, rng).reshape(shape)


def _check_roi_pooling(layer: caffe_pb2.LayerParameter) -> None:
    roi_pooling_settings(layer.roi_pooling_param)
    roi_pad_ratio(layer.roi_pooling_param)


def _opencv_pad_ratio(node: Node) -> str | None:
    if node.param.roi_pooling_param.pad_ratio != 0:
        return "OpenCV's ROIPooling has no pad_ratio (MS-CNN's context ROIs)"
    return None


def _mixes(node: Node, shape: Shape) -> bool:
    return True  # a ROI reads the image its first value names


describe(
    "ROIPooling",
    origin="Fast/Faster R-CNN (rbgirshick/caffe-fast-rcnn)",
    param_message="roi_pooling_param",
    bottoms=2,
    tops=1,
    mixes_batch=_mixes,
    input_values=_roi_input,
    opencv_tested=True,
    validate=_check_roi_pooling,
    opencv_deviation=_opencv_pad_ratio,
)
describe(
    "PSROIPooling",
    origin="R-FCN (daijifeng001/caffe-rfcn)",
    param_message="psroi_pooling_param",
    bottoms=2,
    tops=1,
    mixes_batch=_mixes,
    input_values=_roi_input,
    opencv_tested=True,
    validate=lambda layer: psroi_settings(layer.psroi_pooling_param) and None,
)
