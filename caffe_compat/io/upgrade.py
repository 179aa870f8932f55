"""Bring any net definition to the current (V2) form, as Caffe does on every read.

Pure functions on protobuf messages, each mirroring one of Caffe's upgrade steps: V0 nets -> V1
(upgrade_v0.py), V1 ``layers`` with enum types -> V2 ``layer`` with type strings, deprecated
``input``/``input_dim`` -> an Input layer, data-layer transformation fields -> ``transform_param``.
Nothing downstream ever sees V0 or V1.
The reverse mapping (V2 -> V1) serves the V1 writer.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import unknown_fields

from ..errors import NetDefinitionError
from ..proto import caffe_pb2
from .upgrade_v0 import upgrade_v0_net

V1 = caffe_pb2.V1LayerParameter

V1_TYPE_NAMES: dict[int, str] = {
    V1.NONE: "",
    V1.ABSVAL: "AbsVal",
    V1.ACCURACY: "Accuracy",
    V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL",
    V1.CONCAT: "Concat",
    V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution",
    V1.DATA: "Data",
    V1.DECONVOLUTION: "Deconvolution",
    V1.DROPOUT: "Dropout",
    V1.DUMMY_DATA: "DummyData",
    V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise",
    V1.EXP: "Exp",
    V1.FLATTEN: "Flatten",
    V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output",
    V1.HINGE_LOSS: "HingeLoss",
    V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData",
    V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct",
    V1.LRN: "LRN",
    V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1.MVN: "MVN",
    V1.POOLING: "Pooling",
    V1.POWER: "Power",
    V1.RELU: "ReLU",
    V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax",
    V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    V1.SPLIT: "Split",
    V1.SLICE: "Slice",
    V1.TANH: "TanH",
    V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}
V1_TYPE_BY_NAME: dict[str, int] = {name: enum for enum, name in V1_TYPE_NAMES.items() if name}
# facebook/C3D v1.0's enum: read only (its 3-D settings do not fit V1's messages when written).
# The schema numbers them 6600 + C3D's number; C3D_V1_NUMBERS is C3D's own numbering.
C3D_V1_TYPES: dict[int, str] = {
    V1.ELTWISE_PRODUCT: "EltwiseProduct",
    V1.CONVOLUTION3D: "Convolution3D",
    V1.POOLING3D: "Pooling3D",
    V1.VOLUME_DATA: "VolumeData",
    V1.VIDEO_DATA: "VideoData",
    V1.DECONVOLUTION3D: "Deconvolution3D",
    V1.VIDEO_SEGMENTATION_DATA: "VideoSegmentationData",
    V1.VOXEL_SOFTMAX: "VoxelSoftmax",
    V1.VOXEL_SOFTMAX_LOSS: "VoxelSoftmaxLoss",
    V1.VIDEO_WITH_VOXEL_TRUTH_DATA: "VideoWithVoxelTruthData",
    V1.VOXEL_CUSTOM_LOSS: "VoxelCustomLoss",
    V1.DOWN_SAMPLING: "DownSampling",
}
C3D_V1_NUMBERS = {enum - 6600: enum for enum in C3D_V1_TYPES}

# Fields the two layer messages share by name and type: copied as they are.
_SHARED_SCALARS = ("name",)
_SHARED_REPEATED = ("bottom", "top", "include", "exclude", "loss_weight")
_V2_FIELDS = {f.name for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields}
_V1_PARAM_FIELDS = [
    f.name
    for f in V1.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.name in _V2_FIELDS and f.message_type is not None
]
_DATA_TYPES = ("Data", "ImageData", "WindowData")
_LEGACY_TRANSFORM = ("scale", "mean_file", "crop_size", "mirror")


def is_v0(net: caffe_pb2.NetParameter) -> bool:
    """True for the pre-2014 format whose V1 layers wrap a ``layer { type: "conv" }`` V0 block."""
    return any(layer.HasField("layer") for layer in net.layers)


def v1_layer_to_v2(old: caffe_pb2.V1LayerParameter) -> caffe_pb2.LayerParameter:
    """Convert one V1 layer (enum type, blobs_lr, weight_decay) to a V2 layer, blobs included as
    Caffe's ``UpgradeV1LayerParameter`` does (the caffemodel reader strips them beforehand)."""
    if old.HasField("layer"):
        raise NetDefinitionError(
            "a V0 layer (before 2014) only upgrades with its whole net (upgrade_net): its "
            "padding layers fold into the layers that read them",
            layer=old.name or old.layer.name,
        )
    new = caffe_pb2.LayerParameter()
    for name in _SHARED_SCALARS:
        if old.HasField(name):
            setattr(new, name, getattr(old, name))
    for name in _SHARED_REPEATED:
        getattr(new, name).extend(getattr(old, name))
    new.blobs.extend(old.blobs)
    if old.HasField("type"):
        # NONE maps to "" (Caffe's own upgrade does the same; the layer is refused later).
        names = V1_TYPE_NAMES if old.type in V1_TYPE_NAMES else C3D_V1_TYPES
        new.type = names[old.type]
    for name in _V1_PARAM_FIELDS:
        if old.HasField(name):
            getattr(new, name).CopyFrom(getattr(old, name))
    n_specs = max(
        len(old.blobs_lr), len(old.weight_decay), len(old.param), len(old.blob_share_mode)
    )
    for i in range(n_specs):
        spec = new.param.add()
        if i < len(old.param):
            spec.name = old.param[i]
        if i < len(old.blob_share_mode):
            spec.share_mode = old.blob_share_mode[i]
        if i < len(old.blobs_lr):
            spec.lr_mult = old.blobs_lr[i]
        if i < len(old.weight_decay):
            spec.decay_mult = old.weight_decay[i]
    _upgrade_data_transform(new)
    c3d_settings(new, binary=False)  # a binary net's wait for its dialect fact, which says so
    return new


def read_c3d_numbers(net: caffe_pb2.NetParameter) -> bool:
    """A binary C3D v1.0 net numbers its 3-D types 25 and 30-40, BVLC's ELTWISE, ARGMAX,
    THRESHOLD, ...: when a layer of such a type carries a message only C3D's type reads there
    (an ARGMAX with convolution_param, a THRESHOLD with pooling_param, a SLICE with
    image_data_param), every such number in the net is C3D's. True when renumbered."""
    c3d_fields = {
        V1.ARGMAX: "convolution_param",
        V1.THRESHOLD: "pooling_param",
        V1.SLICE: "image_data_param",
        V1.MVN: "convolution_param",  # DECONVOLUTION3D
    }
    if not any(
        layer.HasField(c3d_fields[layer.type])
        for layer in net.layers
        if layer.HasField("type") and layer.type in c3d_fields
    ):
        return False
    for layer in net.layers:
        if layer.HasField("type") and layer.type in C3D_V1_NUMBERS:
            layer.type = C3D_V1_NUMBERS[layer.type]  # type: ignore[assignment]
    return True


_C3D_CONV_NAMED = ("kernel_depth", "temporal_stride", "filter_group", "temporal_pad")
_C3D_POOL_NAMED = ("kernel_depth", "temporal_stride")


def _is_set(message: Any, name: str) -> bool:
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        return len(getattr(message, name)) > 0
    return message.HasField(name)


def _is_c3d_binary(message: Any, named: tuple[str, ...], bvlc: tuple[str, ...]) -> bool:
    """Whether C3D's settings sit at its own numbers (a binary net): none of them was named and
    BVLC's schema found fields at those numbers (C3D's numbers it knows, or unknown ones)."""
    if any(_is_set(message, name) for name in named):
        return False
    known = any(_is_set(message, name) for name in bvlc)
    return known or len(unknown_fields.UnknownFieldSet(message)) > 0


def c3d_settings(layer: caffe_pb2.LayerParameter, *, binary: bool) -> str | None:
    """C3D v1.0 keeps Convolution3D's and Pooling3D's settings in convolution_param and
    pooling_param: move them into convolution3d_param / pooling3d_param (C3D v1.1's). Named
    in a text net, they move by name; at C3D's numbers (a binary net: ``binary``), the message is
    re-read with C3D's numbering. Returns what was done, or None when nothing moved."""
    if layer.type == "Convolution3D":
        source, target = "convolution_param", "convolution3d_param"
        named, bvlc = _C3D_CONV_NAMED, ("stride", "kernel_h", "kernel_w")
    elif layer.type == "Pooling3D":
        source, target = "pooling_param", "pooling3d_param"
        named, bvlc = _C3D_POOL_NAMED, ("kernel_h", "kernel_w")
    else:
        return None
    if not layer.HasField(source) or layer.HasField(target):
        return None
    old, new = getattr(layer, source), getattr(layer, target)
    if _is_c3d_binary(old, named, bvlc):
        if not binary:
            return None
        new.MergeFromString(old.SerializeToString())
        layer.ClearField(source)
        return f"binary C3D v1.0 {source} read with C3D's field numbers"
    for field, value in old.ListFields():
        if field.name not in new.DESCRIPTOR.fields_by_name:
            continue  # BVLC's own settings C3D's layer never reads (engine, dilation, ...)
        if field.is_repeated:
            if len(value) > 1:
                raise NetDefinitionError(
                    f"{layer.type} takes one {field.name}, not {list(value)}",
                    layer=layer.name,
                    layer_type=layer.type,
                )
            value = value[0]
        if field.message_type is not None:
            getattr(new, field.name).CopyFrom(value)
        else:
            setattr(new, field.name, value)
    layer.ClearField(source)
    return f"C3D v1.0 {source} read as {target}"


def v2_layer_to_v1(new: caffe_pb2.LayerParameter) -> caffe_pb2.V1LayerParameter:
    """Convert a V2 layer back to V1 for writing old-format files. Blobs excluded."""
    if new.type not in V1_TYPE_BY_NAME:
        raise NetDefinitionError(
            f'type "{new.type}" has no V1 enum value; write this net in V2 format',
            layer=new.name,
            layer_type=new.type,
        )
    old = caffe_pb2.V1LayerParameter()
    for name in _SHARED_SCALARS:
        if new.HasField(name):
            setattr(old, name, getattr(new, name))
    for name in _SHARED_REPEATED:
        getattr(old, name).extend(getattr(new, name))
    old.type = V1_TYPE_BY_NAME[new.type]
    v1_fields = {f.name for f in V1.DESCRIPTOR.fields}
    for descriptor, value in new.ListFields():
        if descriptor.name.endswith("_param") and descriptor.message_type is not None:
            if descriptor.name not in v1_fields:
                raise NetDefinitionError(
                    f"{descriptor.name} cannot be written in V1 format",
                    layer=new.name,
                    layer_type=new.type,
                )
            getattr(old, descriptor.name).CopyFrom(value)
    for spec in new.param:
        if spec.HasField("name"):
            old.param.append(spec.name)
        old.blobs_lr.append(spec.lr_mult)
        old.weight_decay.append(spec.decay_mult)
    return old


def _upgrade_data_transform(layer: caffe_pb2.LayerParameter) -> None:
    """Move deprecated per-data-layer crop/mean/mirror/scale into ``transform_param``."""
    if layer.type not in _DATA_TYPES:
        return
    source = {
        "Data": "data_param",
        "ImageData": "image_data_param",
        "WindowData": "window_data_param",
    }[layer.type]
    if not layer.HasField(source):
        return
    params = getattr(layer, source)
    for name in _LEGACY_TRANSFORM:
        if params.HasField(name):
            setattr(layer.transform_param, name, getattr(params, name))
            params.ClearField(name)


def upgrade_input_fields(net: caffe_pb2.NetParameter, *, path: str | None = None) -> None:
    """Replace deprecated ``input``/``input_dim``/``input_shape`` by one leading Input layer.

    As Caffe's ``UpgradeNetInput``, which drops inputs declared without any dimensions (a legacy
    caffemodel's input list). Where a layer of the net produces such a blob (an Input layer of
    the same name: cnn-models' AlexNet), Caffe's reading is the only one and the input goes.
    Otherwise it keeps an Input layer with no shape, so a shape given later (``input_shapes``)
    still has a blob to set where Caffe would stop at an unknown bottom.
    """
    if not net.input:
        return
    if not net.input_dim and not net.input_shape:
        produced = {top for layer in net.layer for top in layer.top}
        kept = [name for name in net.input if name not in produced]
        del net.input[:]
        net.input.extend(kept)
        if not kept:
            return
    if net.input_dim and net.input_shape:
        raise NetDefinitionError(
            "give either input_shape or the deprecated input_dim, not both", path=path
        )
    if net.input_dim and len(net.input_dim) != 4 * len(net.input):
        raise NetDefinitionError(
            f"{len(net.input)} input(s) need {4 * len(net.input)} input_dim values, "
            f"found {len(net.input_dim)}",
            path=path,
        )
    if net.input_shape and len(net.input_shape) not in (1, len(net.input)):
        raise NetDefinitionError(
            f"{len(net.input)} input(s) but {len(net.input_shape)} input_shape entries", path=path
        )
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    layer.top.extend(net.input)
    for i in range(len(net.input) if net.input_shape or net.input_dim else 0):
        shape = layer.input_param.shape.add()
        if net.input_shape:
            shape.CopyFrom(net.input_shape[min(i, len(net.input_shape) - 1)])
        else:
            shape.dim.extend(net.input_dim[4 * i : 4 * i + 4])
    layers = [layer, *net.layer]
    del net.layer[:]
    net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_dim")
    net.ClearField("input_shape")


def upgrade_net(net: caffe_pb2.NetParameter, *, path: str | None = None) -> bool:
    """Upgrade ``net`` in place to V2 with Input layers; return True when it was V1 (or V0).

    ``path`` only names the file in error messages.
    """
    was_v1 = len(net.layers) > 0
    if was_v1 and len(net.layer) > 0:
        raise NetDefinitionError("net mixes V1 `layers` and V2 `layer` entries", path=path)
    if was_v1:
        if is_v0(net):
            upgrade_v0_net(net, path=path)
        read_c3d_numbers(net)
        converted = [v1_layer_to_v2(old) for old in net.layers]
        net.ClearField("layers")
        net.layer.extend(converted)
    else:
        for layer in net.layer:
            _upgrade_data_transform(layer)
    upgrade_input_fields(net, path=path)
    return was_v1
