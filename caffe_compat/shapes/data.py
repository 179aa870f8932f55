"""Layers that feed the net or score training: Input's tops and data layers' first tops become
declared inputs, the rest drop out.

Caffe's Input layer declares every top an input, shaped by ``input_param`` (one shape for all
tops, or one per top; none: the user gives it). A data layer's first top is the batch the net
computes on; its shape comes from the definition where the definition tells it (MemoryData,
DummyData, a crop size), else the user gives it.
Labels (second tops) are not inputs of an inference graph; a net built for training takes them
as inputs too, one label per image for the layers that read labels from their source (Caffe's
``label_shape(1, batch_size)``). DummyData's tops are all data.
"""

from __future__ import annotations

from ..errors import NetDefinitionError
from ..io.dialects import rescue
from ..ir.graph import Shape
from ..proto import caffe_pb2
from ..registry import describe

_BATCH_FIELD = {
    "Data": "data_param",
    "ImageData": "image_data_param",
    "WindowData": "window_data_param",
    "HDF5Data": "hdf5_data_param",
    "ImageSegData": "image_data_param",  # DeepLab v2
}


def _where(layer: caffe_pb2.LayerParameter) -> dict[str, str]:
    return {"layer": layer.name, "layer_type": layer.type}


def _dummy_shapes(layer: caffe_pb2.LayerParameter) -> list[Shape | None]:
    """Caffe's DummyDataLayer: ``shape`` (one for all tops, or one per top), or the legacy
    num/channels/height/width lists, each of length 1 or one per top."""
    p, tops = layer.dummy_data_param, len(layer.top)
    legacy = [list(p.num), list(p.channels), list(p.height), list(p.width)]
    if p.shape:
        if any(legacy):
            raise NetDefinitionError(
                "give shape or num/channels/height/width, not both", **_where(layer)
            )
        if len(p.shape) not in (1, tops):
            raise NetDefinitionError(f"{len(p.shape)} shapes for {tops} tops", **_where(layer))
        shapes = [tuple(int(d) for d in s.dim) for s in p.shape]
        return [shapes[0 if len(shapes) == 1 else i] for i in range(tops)]
    if not any(legacy):
        return [None] * tops
    names = ("num", "channels", "height", "width")
    for name, values in zip(names, legacy):
        if len(values) not in (1, tops):
            raise NetDefinitionError(
                f"dummy_data_param {name} has {len(values)} values; give 1 or one per top ({tops})",
                **_where(layer),
            )
    return [tuple(int(v[0 if len(v) == 1 else i]) for v in legacy) for i in range(tops)]


def input_shapes(layer: caffe_pb2.LayerParameter, notes: list[str]) -> list[Shape | None]:
    """One shape per top of an Input layer (None where the definition gives none)."""
    shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
    if not shapes:
        return [None] * len(layer.top)
    if len(shapes) == 1:
        return [shapes[0]] * len(layer.top)
    if len(shapes) != len(layer.top):
        raise NetDefinitionError(
            f"{len(layer.top)} tops but {len(shapes)} input shapes", **_where(layer)
        )
    return list(shapes)


def data_shapes(
    layer: caffe_pb2.LayerParameter, notes: list[str], labels: bool = False
) -> list[Shape | None]:
    """One entry per top: the batch shape a data top would have (None when the definition does
    not tell). Label tops are None unless ``labels`` (a net built for training) asks for them."""
    if layer.type == "DummyData":
        return _dummy_shapes(layer)
    tops = _data_shapes(layer, notes)
    if labels and layer.type != "HDF5Data" and len(tops) == 2:
        field = _BATCH_FIELD.get(layer.type, "memory_data_param")
        batch = tops[0][0] if tops[0] else int(getattr(layer, field).batch_size)
        tops[1] = (batch,) if batch else None
    return tops


def _data_shapes(layer: caffe_pb2.LayerParameter, notes: list[str]) -> list[Shape | None]:
    labels: list[Shape | None] = [None] * (len(layer.top) - 1)
    if layer.type == "MemoryData":
        p = layer.memory_data_param
        dims = (int(p.batch_size), int(p.channels), int(p.height), int(p.width))
        return [dims if all(dims) else None, *labels]
    t = layer.transform_param
    crop_h = int(t.crop_h or t.crop_size)
    crop_w = int(t.crop_w or t.crop_size)
    field = _BATCH_FIELD.get(layer.type)
    batch = int(getattr(layer, field).batch_size) if field else 1
    if layer.type == "ImageData" and not crop_h:
        crop_h = int(layer.image_data_param.new_height)
        crop_w = int(layer.image_data_param.new_width)
    if not crop_h or not crop_w:
        return [None, *labels]
    channels = 3
    listed = layer.type in ("ImageData", "ImageSegData")
    if (listed and not layer.image_data_param.is_color) or t.force_gray:
        channels = 1
    notes.append(
        f'input "{layer.top[0]}" from {layer.type} layer "{layer.name}": '
        f"{channels} channels assumed (the database, not the net, defines them)"
    )
    return [(batch or 1, channels, crop_h, crop_w), *labels]


def _dummy_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    """DummyDataLayer's filler per top: none given is a constant 0, one serves every top."""
    given = list(layer.dummy_data_param.data_filler)
    tops = len(layer.top)
    if len(given) not in (0, 1, tops):
        raise NetDefinitionError(
            f"Number of data fillers must be 0, 1 or equal to the number of tops: {tops}; "
            f"you specified {len(given)} data fillers.",
            **_where(layer),
        )
    if not given:
        return [caffe_pb2.FillerParameter(type="constant", value=0.0)] * tops
    return [given[i if len(given) > 1 else 0] for i in range(tops)]


describe(
    "Input",
    role="input",
    param_message="input_param",
    data_shape=input_shapes,
    bottoms=0,
    tops=(1, None),
)
describe(
    ("WindowData", "MemoryData", "AnnotatedData"),
    role="data",
    data_shape=data_shapes,
    bottoms=0,
    tops=(1, None),
)
# The data layers `caffe-compat train` reads, each with the class that streams its batches
# (imported only when training: caffe_compat.train.data.sources).
for _type, _source in (
    ("Data", "DataSource"),
    ("ImageData", "ImageDataSource"),
    ("HDF5Data", "HDF5DataSource"),
):
    describe(
        _type,
        role="data",
        data_shape=data_shapes,
        batch_source=f"caffe_compat.train.data.sources:{_source}",
        bottoms=0,
        tops=(1, None),
    )
describe(
    "DummyData",
    role="data",
    data_shape=data_shapes,
    top_fillers=_dummy_fillers,
    param_message="dummy_data_param",
    bottoms=0,
    tops=(1, None),
)
# Training layers without a family of their own here (SSD's, and HDF5Output, which writes files):
# dropped from inference graphs; a net built for training that holds one is refused by name.
describe(("MultiBoxLoss", "DetectionEvaluate", "HDF5Output"), role="training")
# DeepLab v2's test nets: ImageSegData (images, their labels and sizes, padded to crop_size) feeds
# the net; SegAccuracy scores it against the labels and MatWrite writes blobs to .mat files.
describe(
    "ImageSegData",
    role="data",
    data_shape=data_shapes,
    origin="DeepLab v2 (images, labels and image sizes, padded to crop_size)",
    bottoms=0,
    tops=(1, 3),
)
describe(
    ("SegAccuracy", "MatWrite"),
    role="training",
    origin="DeepLab v2 (scores against the labels; writes blobs to .mat files)",
)


def _dense_image_shapes(
    layer: caffe_pb2.LayerParameter, notes: list[str], labels: bool = False
) -> list[Shape | None]:
    """caffe-segnet's DenseImageDataLayer::DataLayerSetUp: images and per-pixel labels of the
    transform's crop_size, else crop_height x crop_width, else new_height x new_width (else the
    first image's size, which the definition does not tell: None)."""
    p = layer.dense_image_data_param
    crop = int(layer.transform_param.crop_size)
    size = (crop, crop) if crop else (int(p.crop_height), int(p.crop_width))
    if not all(size):
        size = (int(p.new_height), int(p.new_width))
    batch = int(p.batch_size) or 1
    channels = 3 if p.is_color else 1
    if not all(size):
        return [None] * len(layer.top)
    notes.append(
        f'input "{layer.top[0]}" from DenseImageData layer "{layer.name}": {channels} channels '
        f"of {size[0]} x {size[1]} (caffe-segnet's dense_image_data_param)"
    )
    label = (batch, 1, *size) if labels else None
    return [(batch, channels, *size), *[label] * (len(layer.top) - 1)]


def _dense_image_dialect(layer: caffe_pb2.LayerParameter, blobs: int | None) -> str | None:
    if rescue(layer, "dense_image_data_param", parsed_as=("tile_param",)):
        return "dense_image_data_param read from caffe-segnet's field 138"
    return None


describe(
    "DenseImageData",
    role="data",
    data_shape=_dense_image_shapes,
    param_message="dense_image_data_param",
    dialect=_dense_image_dialect,
    origin="caffe-segnet: images with per-pixel labels",
    bottoms=0,
    tops=(1, 2),
)
