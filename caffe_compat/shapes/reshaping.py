"""Shape rules for the layers that route, cut, reshape or repeat blobs: Split, Concat, Flatten,
Slice, Reshape, Crop, Tile, and Silence (which only consumes blobs); and two forks' crops:

- lltcggie/caffe's (waifu2x-caffe's) CropCenter, ``y = x[c0:-c0, c1:-c1, ...]`` with one
  ``crop_size`` per axis (crop_center_layer.cpp: LayerSetUp checks that count and
  ``2 * c + 1 <= size``);
- RCF's (yun-liu/RCF) AutoCrop, ``y = x[:, :, h:h + H, w:w + W]`` with (H, W) the second
  bottom's, and (h, w) derived by auto_crop_layer.cpp's LayerSetUp from the net: walk back from
  the first bottom along each producer's first bottom, then from the second until that path is
  met, compose each layer's coordinate map (util/coords.hpp: Convolution and Pooling
  ``FilterMap(extent, stride, pad).inv()``, Deconvolution ``FilterMap``, i.e. ``x * stride +
  (extent - 1) / 2 - pad``; Crop uses its offsets of axes 0 and 1; the fork's NeuronLayers,
  Concat, Eltwise, LRN, MVN, Slice, Softmax and Split the identity; others have none), and the
  map from the first bottom to the second must be ``x - c`` with c a whole number >= 0. The
  offsets are written into ``auto_crop_param`` when the net is read (the ``net_settings`` fact).
"""

from __future__ import annotations

import itertools
import math

from ..io.dialects import rescue
from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register
from .geometry import canonical_axis, conv_geometry, pool_geometry


@register("Flatten", "shape")
def _flatten(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.flatten_param
    start = canonical_axis(int(p.axis), len(shape))
    end = canonical_axis(int(p.end_axis), len(shape), "end_axis")
    if end < start:
        raise ValueError(f"end_axis {p.end_axis} comes before axis {p.axis}")
    flat = math.prod(shape[start : end + 1])
    return LayerShapes([(*shape[:start], flat, *shape[end + 1 :])], [])


@register("Concat", "shape")
def _concat(node: Node, inputs: list[Shape]) -> LayerShapes:
    p = node.param.concat_param
    first = inputs[0]
    if p.HasField("concat_dim") and not p.HasField("axis"):
        axis = int(p.concat_dim)
        if axis >= len(first):
            raise ValueError(f"concat_dim {axis} is out of range for a {len(first)}-D blob")
    else:
        axis = canonical_axis(int(p.axis), len(first))
    for other in inputs[1:]:
        if len(other) != len(first) or any(
            a != b for i, (a, b) in enumerate(zip(first, other)) if i != axis
        ):
            raise ValueError(f"bottoms {list(first)} and {list(other)} differ off axis {axis}")
    total = sum(s[axis] for s in inputs)
    return LayerShapes([(*first[:axis], total, *first[axis + 1 :])], [])


@register("Split", "shape")
def _split(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    return LayerShapes([shape] * len(node.outputs), [])


def slice_axis(node: Node, ndim: int) -> int:
    """``axis``, or the legacy ``slice_dim`` (never both, never negative)."""
    p = node.param.slice_param
    if p.HasField("slice_dim"):
        if p.HasField("axis"):
            raise ValueError("give axis or slice_dim, not both")
        if p.slice_dim >= ndim:
            raise ValueError(f"slice_dim {p.slice_dim} is out of range for a {ndim}-D blob")
        return int(p.slice_dim)
    return canonical_axis(int(p.axis), ndim)


def slice_sizes(node: Node, shape: Shape) -> tuple[int, list[int]]:
    """The slice axis and each top's extent along it."""
    axis = slice_axis(node, len(shape))
    points, tops, size = list(node.param.slice_param.slice_point), len(node.outputs), shape[axis]
    if not points:
        if size % tops:
            raise ValueError(f"{tops} tops do not divide axis {axis} of size {size} evenly")
        return axis, [size // tops] * tops
    if len(points) != tops - 1:
        raise ValueError(f"{len(points)} slice points for {tops} tops")
    bounds = [0, *points, size]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    if any(s <= 0 for s in sizes):
        raise ValueError(f"slice points {points} must rise strictly inside (0, {size})")
    return axis, sizes


@register("Slice", "shape")
def _slice(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    axis, sizes = slice_sizes(node, shape)
    return LayerShapes([(*shape[:axis], s, *shape[axis + 1 :]) for s in sizes], [])


def reshape_span(node: Node, ndim: int) -> tuple[int, int]:
    """The bottom axes ``[start, end)`` that the new ``shape`` replaces."""
    p = node.param.reshape_param
    start = int(p.axis) if p.axis >= 0 else ndim + int(p.axis) + 1
    if not 0 <= start <= ndim:
        raise ValueError(f"axis {p.axis} is out of range for a {ndim}-D bottom")
    if p.num_axes < -1:
        raise ValueError(f"num_axes {p.num_axes} must be -1 or more")
    end = ndim if p.num_axes == -1 else start + int(p.num_axes)
    if end > ndim:
        raise ValueError(f"axis + num_axes = {end} is out of range for a {ndim}-D bottom")
    return start, end


@register("Reshape", "shape")
def _reshape(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    if node.tops == node.bottoms:
        raise ValueError("Reshape cannot run in place")
    start, end = reshape_span(node, len(shape))
    dims = [int(d) for d in node.param.reshape_param.shape.dim]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise ValueError(f"shape {dims} may hold one -1 and no other negative dim")
    top = [*shape[:start], *dims, *shape[end:]]
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(shape):
                raise ValueError(f"shape dim {i} is 0 but the bottom has no axis {start + i}")
            top[start + i] = shape[start + i]
    if -1 in dims:
        known = math.prod(d for d in top if d != -1)
        if known == 0 or math.prod(shape) % known:
            raise ValueError(f"{list(shape)} cannot be reshaped to {top}")
        top[start + dims.index(-1)] = math.prod(shape) // known
    if math.prod(top) != math.prod(shape):
        raise ValueError(f"{list(shape)} and {top} hold different counts")
    return LayerShapes([tuple(top)], [])


def crop_offsets(node: Node, shape: Shape) -> tuple[int, list[int]]:
    """The first cropped axis and the offset of every axis from it on."""
    p = node.param.crop_param
    axis = canonical_axis(int(p.axis), len(shape))
    n = len(shape) - axis
    if len(p.offset) > 1 and len(p.offset) != n:
        raise ValueError(f"{len(p.offset)} offsets for the {n} axes from axis {axis}")
    offsets = [int(p.offset[0])] * n if len(p.offset) == 1 else [int(o) for o in p.offset]
    return axis, offsets or [0] * n


@register("Crop", "shape")
def _crop(node: Node, inputs: list[Shape]) -> LayerShapes:
    if len(inputs) != 2:
        raise ValueError("Crop takes two bottoms: the blob and one of the target size")
    shape, like = inputs
    if len(like) != len(shape):
        raise ValueError(f"bottoms {list(shape)} and {list(like)} differ in rank")
    axis, offsets = crop_offsets(node, shape)
    for i, off in enumerate(offsets, start=axis):
        if shape[i] - off < like[i]:
            raise ValueError(
                f"crop of size {like[i]} at offset {off} leaves axis {i} of size {shape[i]}"
            )
    return LayerShapes([(*shape[:axis], *like[axis:])], [])


def center_crop_sizes(node: Node, shape: Shape) -> list[int]:
    """CropCenter's ``crop_size``, one per axis of the bottom, checked as its LayerSetUp does."""
    sizes = [int(c) for c in node.param.crop_center_param.crop_size]
    if len(sizes) != len(shape):
        raise ValueError(
            f"crop_center_param.crop_size has {len(sizes)} values; the bottom has "
            f"{len(shape)} axes (one each)"
        )
    for axis, (crop, size) in enumerate(zip(sizes, shape)):
        if 2 * crop + 1 > size:
            raise ValueError(f"crop_size {crop} leaves nothing of axis {axis} (size {size})")
    return sizes


@register("CropCenter", "shape")
def _crop_center(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    sizes = center_crop_sizes(node, shape)
    return LayerShapes([tuple(s - 2 * c for s, c in zip(shape, sizes))], [])


def _crop_center_dialect(layer: caffe_pb2.LayerParameter, blobs: int | None) -> str | None:
    if rescue(layer, "crop_center_param", parsed_as=("upsample_param",)):
        return "crop_center_param read from field 149 (lltcggie/caffe; upsample_param here)"
    return None


# --- AutoCrop (RCF) ---------------------------------------------------------------------------

AxisMap = tuple[tuple[float, float], tuple[float, float]]  # (scale, shift) for H and W
_IDENTITY: AxisMap = ((1.0, 0.0), (1.0, 0.0))
# Layers whose coord_map() is the identity in RCF's fork (NeuronLayer and the headers that say so).
_COORD_IDENTITY = frozenset(
    (
        "AbsVal",
        "BNLL",
        "Dropout",
        "ELU",
        "Exp",
        "Log",
        "Power",
        "PReLU",
        "ReLU",
        "Sigmoid",
        "TanH",
        "Threshold",
        "Concat",
        "Eltwise",
        "LRN",
        "MVN",
        "Slice",
        "Softmax",
        "Split",
    )
)
_HUGE = 1 << 20  # a stand-in input size: a pooling window's settings do not depend on it


def _compose(left: AxisMap, right: AxisMap) -> AxisMap:
    return tuple((la * ra, la * rb + lb) for (la, lb), (ra, rb) in zip(left, right))  # type: ignore[return-value]


def _inverse(m: AxisMap) -> AxisMap:
    return tuple((1.0 / a, -b / a) for a, b in m)  # type: ignore[return-value]


def _filter_map(extent: tuple[int, ...], stride: tuple[int, ...], pad: tuple[int, ...]) -> AxisMap:
    return tuple((float(s), (e - 1) / 2 - p) for e, s, p in zip(extent, stride, pad))  # type: ignore[return-value]


def _coord_map(layer: caffe_pb2.LayerParameter) -> AxisMap:
    """A layer's coord_map() in RCF's fork, output from input."""
    kind = layer.type
    if kind in _COORD_IDENTITY:
        return _IDENTITY
    if kind in ("Convolution", "Deconvolution"):
        geom = conv_geometry(layer.convolution_param, 2)
        extent = tuple(d * (k - 1) + 1 for k, d in zip(geom.kernel, geom.dilation))
        m = _filter_map(extent, geom.stride, geom.pad)
        return m if kind == "Deconvolution" else _inverse(m)
    if kind == "Pooling":
        if layer.pooling_param.global_pooling:
            raise ValueError(f'layer "{layer.name}" (global Pooling) has no coordinate map here')
        geom = pool_geometry(layer.pooling_param, _HUGE, _HUGE)
        return _inverse(_filter_map(geom.kernel, geom.stride, geom.pad_begin))
    if kind == "Crop":  # the offsets of axes 0 and 1 (zero unless the crop starts there)
        p = layer.crop_param
        axis, given = int(p.axis) % 4, [int(o) for o in p.offset]
        offsets = [0] * 4  # crop_layer.cpp: one per axis, 0 before ``axis``
        for j, i in enumerate(range(axis, 4)):
            offsets[i] = given[0] if len(given) == 1 else given[j] if len(given) > j else 0
        return ((1.0, -float(offsets[0])), (1.0, -float(offsets[1])))
    if kind == "AutoCrop" and layer.HasField("auto_crop_param"):
        p = layer.auto_crop_param
        return ((1.0, -float(p.offset_h)), (1.0, -float(p.offset_w)))
    raise ValueError(f'layer "{layer.name}" ({kind}) has no coordinate map in RCF\'s Caffe')


def _auto_crop_offsets(layer: caffe_pb2.LayerParameter, net: caffe_pb2.NetParameter) -> str | None:
    """auto_crop_layer.cpp's LayerSetUp (see the module docstring); None when already given."""
    if layer.HasField("auto_crop_param") or len(layer.bottom) != 2:
        return None  # given, or the bottoms count check reports it
    from ..errors import NetDefinitionError

    def fail(reason: str) -> NetDefinitionError:
        return NetDefinitionError(reason, layer=layer.name, layer_type=layer.type)

    layers = list(net.layer)
    here = next(i for i, other in enumerate(layers) if other is layer)
    producer: dict[str, int] = {}
    for i, other in enumerate(layers[: here + 1]):
        for top in other.top:
            producer.setdefault(top, i)  # the first producer: in-place layers are skipped

    def upstream(blob: str) -> str | None:
        i = producer.get(blob)
        if i is None or not layers[i].bottom or layers[i].bottom[0] == blob:
            return None
        return layers[i].bottom[0]

    path: list[str] = [layer.bottom[0]]
    while (up := upstream(path[-1])) is not None and up not in path:
        path.append(up)
    meet, seen = layer.bottom[1], set()
    while meet not in path:
        seen.add(meet)
        up = upstream(meet)
        if up is None or up in seen:
            raise fail("AutoCrop cannot align apparently disconnected blobs")
        meet = up
    maps = []
    for start in layer.bottom[:2]:
        m, blob = _IDENTITY, start
        while blob != meet:
            try:
                m = _compose(m, _coord_map(layers[producer[blob]]))
            except ValueError as exc:
                raise fail(f"AutoCrop: {exc}") from None
            blob = upstream(blob)  # type: ignore[assignment]
        maps.append(m)
    crop = _compose(maps[1], _inverse(maps[0]))
    offsets = []
    for axis, (scale, shift) in zip("hw", crop):
        if abs(scale - 1.0) > 1e-6:
            raise fail(f"AutoCrop: the bottoms differ in scale ({scale:g}) along {axis}")
        if shift > 1e-6 or abs(shift - round(shift)) > 1e-6:
            raise fail(f"AutoCrop: the crop along {axis} is {-shift:g}, not a whole number >= 0")
        offsets.append(-round(shift))
    layer.auto_crop_param.offset_h, layer.auto_crop_param.offset_w = offsets
    return f"offsets (h, w) = ({offsets[0]}, {offsets[1]}) from the coordinate maps"


def auto_crop_offsets(node: Node) -> tuple[int, int]:
    p = node.param.auto_crop_param
    if not (p.HasField("offset_h") and p.HasField("offset_w")):
        raise ValueError("AutoCrop's offsets were not derived from the net (two bottoms needed)")
    return int(p.offset_h), int(p.offset_w)


@register("AutoCrop", "shape")
def _auto_crop(node: Node, inputs: list[Shape]) -> LayerShapes:
    if len(inputs) != 2 or len(inputs[0]) != 4 or len(inputs[1]) != 4:
        raise ValueError("AutoCrop takes two 4-D bottoms: the blob and one of the target size")
    (n, c, h, w), like = inputs
    oh, ow = auto_crop_offsets(node)
    if oh + like[2] > h or ow + like[3] > w:
        raise ValueError(
            f"a {like[2]} x {like[3]} crop at ({oh}, {ow}) leaves the bottom's {h} x {w}"
        )
    return LayerShapes([(n, c, like[2], like[3])], [])


@register("Tile", "shape")
def _tile(node: Node, inputs: list[Shape]) -> LayerShapes:
    (shape,) = inputs
    p = node.param.tile_param
    axis = canonical_axis(int(p.axis), len(shape))
    if not p.HasField("tiles") or p.tiles <= 0:
        raise ValueError("tiles must be set and positive")
    return LayerShapes([(*shape[:axis], shape[axis] * int(p.tiles), *shape[axis + 1 :])], [])


def _not_in_place(layer: caffe_pb2.LayerParameter) -> None:
    """Flatten and Split refuse to run in place (a CHECK in their LayerSetUp)."""
    if layer.bottom and layer.bottom[0] in layer.top:
        raise ValueError(f'top "{layer.bottom[0]}" is its bottom: {layer.type} cannot run in place')


def _concat_fields(layer: caffe_pb2.LayerParameter) -> None:
    p = layer.concat_param
    if p.HasField("axis") and p.HasField("concat_dim"):
        raise ValueError("concat_param: give axis or the legacy concat_dim, not both")


def _joins_rows(node: Node) -> bool:
    """Concat along axis 0 (also as the legacy concat_dim) stacks its bottoms' rows."""
    p = node.param.concat_param
    return (p.concat_dim if p.HasField("concat_dim") and not p.HasField("axis") else p.axis) == 0


describe(
    "Concat",
    opencv_tested=True,
    bottoms=(1, None),
    tops=1,
    validate=_concat_fields,
    joins_rows=_joins_rows,
)
describe("Crop", opencv_tested=True, bottoms=2, tops=1)
describe(
    "CropCenter",
    origin="lltcggie/caffe (waifu2x-caffe)",
    param_message="crop_center_param",
    dialect=_crop_center_dialect,
    bottoms=1,
    tops=1,
)
describe(
    "AutoCrop",
    origin="yun-liu/RCF",
    param_message="auto_crop_param",
    net_settings=_auto_crop_offsets,
    bottoms=2,
    tops=1,
)
describe("Flatten", opencv_tested=True, bottoms=1, tops=1, validate=_not_in_place)
describe("Reshape", opencv_tested=True, bottoms=1, tops=1)
describe("Slice", opencv_tested=True, bottoms=1, tops=(1, None))
describe("Split", opencv_tested=True, bottoms=1, tops=(1, None), validate=_not_in_place)
describe("Tile", bottoms=1, tops=1)


@register("Silence", "shape")
def _silence(node: Node, inputs: list[Shape]) -> LayerShapes:
    return LayerShapes([], [])  # consumes its bottoms so that they are not net outputs


describe("Silence", role="training", bottoms=(1, None), tops=0)
