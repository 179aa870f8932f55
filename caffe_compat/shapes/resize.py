"""Shape rules and facts for the forks' resizing layers: Upsample (two meanings) and Interp.

Upsample is caffe-segnet's max-unpooling when it has a second bottom (the mask a MAX Pooling
layer wrote as its second top) and the YOLOv3 ports' nearest-neighbour upsampling by an integer
``scale`` when it has one. Interp is DeepLab v2's and PSPNet's bilinear resize with Caffe's
align-corners grid (interp.cpp), after cropping ``-pad_beg`` / ``-pad_end`` pixels.
docs/forks.md gives the forks and their sources.
"""

from __future__ import annotations

from ..io.dialects import rescue
from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register


def unpools(node: Node) -> bool:
    """caffe-segnet's Upsample (a mask bottom, and in some of its descendants a third bottom
    whose height and width the top takes), not the YOLOv3 ports' nearest one."""
    return len(node.inputs) >= 2


def nearest_scale(node: Node) -> int:
    """The YOLOv3 ports' integer ``scale`` (their default is 1, caffe-segnet's 2)."""
    p = node.param.upsample_param
    return int(p.scale) if p.HasField("scale") else 1


def unpool_size(param: caffe_pb2.UpsampleParameter, height: int, width: int) -> tuple[int, int]:
    """caffe-segnet's UpsampleLayer::Reshape: upsample_h/w, else bottom * scale - pad_out."""
    if param.HasField("upsample_h") and param.HasField("upsample_w"):
        if param.upsample_h <= 1 or param.upsample_w <= 1:
            raise ValueError("upsample_h and upsample_w must be greater than 1")
        return int(param.upsample_h), int(param.upsample_w)
    if param.HasField("scale_h") != param.HasField("scale_w"):
        raise ValueError("scale_h and scale_w must be given together")
    if param.HasField("scale_h") and param.HasField("scale"):
        raise ValueError("give scale or scale_h/scale_w, not both")
    sh, sw = (param.scale_h, param.scale_w) if param.HasField("scale_h") else (param.scale,) * 2
    if sh <= 1 or sw <= 1:
        raise ValueError(f"the scale ({sh} x {sw}) must be greater than 1")
    if (param.pad_out_h and sh != 2) or (param.pad_out_w and sw != 2):
        raise ValueError("pad_out_h/pad_out_w need a scale of 2")
    return height * sh - int(param.pad_out_h), width * sw - int(param.pad_out_w)


@register("Upsample", "shape")
def _upsample(node: Node, inputs: list[Shape]) -> LayerShapes:
    shape = inputs[0]
    if len(shape) != 4:
        raise ValueError(f"Upsample needs a 4-D bottom, got {list(shape)}")
    if unpools(node):
        if tuple(inputs[1]) != tuple(shape):
            raise ValueError(
                f"the mask bottom {list(inputs[1])} must have the data bottom's shape {list(shape)}"
            )
        if len(inputs) == 3:
            if len(inputs[2]) != 4:
                raise ValueError(f"the size bottom must be 4-D, got {list(inputs[2])}")
            h, w = inputs[2][2:]
        else:
            h, w = unpool_size(node.param.upsample_param, shape[2], shape[3])
        return LayerShapes([(shape[0], shape[1], h, w)], [])
    scale = nearest_scale(node)
    if scale < 1:
        raise ValueError(f"scale {scale} must be at least 1")
    return LayerShapes([(shape[0], shape[1], shape[2] * scale, shape[3] * scale)], [])


def interp_size(param: caffe_pb2.InterpParameter, inputs: list[Shape]) -> tuple[int, int]:
    """PSPNet's InterpLayer::Reshape (shrink, zoom, height and width, or both factors in that
    order of precedence), with the older releases' second bottom giving the size."""
    if param.pad_beg > 0 or param.pad_end > 0:
        raise ValueError("pad_beg and pad_end must not be positive (Interp only crops)")
    h_in = inputs[0][2] + param.pad_beg + param.pad_end
    w_in = inputs[0][3] + param.pad_beg + param.pad_end
    shrink, zoom = param.HasField("shrink_factor"), param.HasField("zoom_factor")
    sized = param.HasField("height") and param.HasField("width")
    if (shrink and param.shrink_factor < 1) or (zoom and param.zoom_factor < 1):
        raise ValueError("zoom_factor and shrink_factor must be at least 1")

    def shrunk(h: int, w: int) -> tuple[int, int]:
        return (h - 1) // param.shrink_factor + 1, (w - 1) // param.shrink_factor + 1

    def zoomed(h: int, w: int) -> tuple[int, int]:
        return h + (h - 1) * (param.zoom_factor - 1), w + (w - 1) * (param.zoom_factor - 1)

    if shrink and not zoom:
        size = shrunk(h_in, w_in)
    elif zoom and not shrink:
        size = zoomed(h_in, w_in)
    elif sized:
        size = (param.height, param.width)
    elif shrink and zoom:
        size = zoomed(*shrunk(h_in, w_in))
    elif len(inputs) == 2:
        size = (inputs[1][2], inputs[1][3])
    else:
        raise ValueError(
            "give zoom_factor, shrink_factor, height and width, or a second bottom for the size"
        )
    if h_in <= 0 or w_in <= 0 or size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"the cropped input and the output ({list(size)}) must be positive")
    return int(size[0]), int(size[1])


@register("Interp", "shape")
def _interp(node: Node, inputs: list[Shape]) -> LayerShapes:
    shape = inputs[0]
    if len(shape) != 4:
        raise ValueError(f"Interp needs a 4-D bottom, got {list(shape)}")
    h, w = interp_size(node.param.interp_param, inputs)
    return LayerShapes([(shape[0], shape[1], h, w)], [])


def _interp_opencv(node: Node) -> str | None:
    p = node.param.interp_param
    if p.HasField("shrink_factor") or p.pad_beg or p.pad_end:
        return (
            "OpenCV 4's Interp reads zoom_factor, height and width only (no shrink_factor or pads)"
        )
    return None


def _upsample_dialect(layer: caffe_pb2.LayerParameter, blobs: int | None) -> str | None:
    if rescue(layer, "upsample_param", parsed_as=("embed_param",)):
        return "upsample_param read from caffe-segnet's field 137"
    return None


def _interp_dialect(layer: caffe_pb2.LayerParameter, blobs: int | None) -> str | None:
    if rescue(layer, "interp_param", parsed_as=("input_param",)):
        return "interp_param read from DeepLab v2's and PSPNet's field 143"
    return None


describe(
    "Upsample",
    origin=(
        "caffe-segnet: max-unpooling with the pooling mask as a second bottom (a third gives "
        "the size); "
        "darknet2caffe YOLOv3 ports: nearest by scale, one bottom"
    ),
    param_message="upsample_param",
    dialect=_upsample_dialect,
    bottoms=(1, 3),
    tops=1,
)
describe(
    "Interp",
    origin="DeepLab v2, PSPNet, ICNet, caffe_ocr: bilinear, align-corners grid",
    param_message="interp_param",
    dialect=_interp_dialect,
    opencv_deviation=_interp_opencv,
    opencv_tested=True,
    bottoms=(1, 2),
    tops=1,
)
