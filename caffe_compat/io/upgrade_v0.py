"""Pre-2014 "V0" nets -> V1 layers, the first of Caffe's upgrade steps (``UpgradeV0Net``).

In V0 each ``layers { }`` entry holds only bottom/top and wraps a ``layer { name type ... }``
(V0LayerParameter) whose parameters are flat fields (``num_output``, ``kernelsize``, ``pool``...)
whose meaning depends on a lower-case type string. Separate ``padding`` layers are folded into the
conv/pool layer that reads them. The result is an ordinary V1 net, so the V1 -> V2 step in
upgrade.py does the rest and nothing downstream ever sees V0.

Caffe keeps going when a flat field does not apply to the layer's type (it logs and drops it);
here such fields are dropped too, with one warning per layer naming the file and the layer.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from ..errors import NetDefinitionError
from ..proto import caffe_pb2
from .messages import is_repeated

V0 = caffe_pb2.V0LayerParameter
V1 = caffe_pb2.V1LayerParameter
PADDING = "padding"

# Every type string Caffe's UpgradeV0LayerType knows; anything else stops the upgrade.
V0_TYPES: dict[str, int] = {
    "accuracy": V1.ACCURACY,
    "bnll": V1.BNLL,
    "concat": V1.CONCAT,
    "conv": V1.CONVOLUTION,
    "data": V1.DATA,
    "dropout": V1.DROPOUT,
    "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN,
    "hdf5_data": V1.HDF5_DATA,
    "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL,
    "images": V1.IMAGE_DATA,
    "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT,
    "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS,
    "pool": V1.POOLING,
    "relu": V1.RELU,
    "sigmoid": V1.SIGMOID,
    "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS,
    "split": V1.SPLIT,
    "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

# Flat V0 field -> {V0 type: "<V1 parameter message>.<field>"} for the types it applies to.
_CONV_IP = ("conv", "innerproduct")
_TARGETS: dict[str, dict[str, str]] = {
    "num_output": dict(zip(_CONV_IP, ("convolution_param", "inner_product_param"))),
    "biasterm": dict(zip(_CONV_IP, ("convolution_param", "inner_product_param"))),
    "weight_filler": dict(zip(_CONV_IP, ("convolution_param", "inner_product_param"))),
    "bias_filler": dict(zip(_CONV_IP, ("convolution_param", "inner_product_param"))),
    "pad": {"conv": "convolution_param", "pool": "pooling_param"},
    "kernelsize": {"conv": "convolution_param", "pool": "pooling_param"},
    "stride": {"conv": "convolution_param", "pool": "pooling_param"},
    "group": {"conv": "convolution_param"},
    "pool": {"pool": "pooling_param"},
    "dropout_ratio": {"dropout": "dropout_param"},
    "local_size": {"lrn": "lrn_param"},
    "alpha": {"lrn": "lrn_param"},
    "beta": {"lrn": "lrn_param"},
    "k": {"lrn": "lrn_param"},
    "source": {
        "data": "data_param",
        "hdf5_data": "hdf5_data_param",
        "images": "image_data_param",
        "window_data": "window_data_param",
        "infogain_loss": "infogain_loss_param",
    },
    "batchsize": {
        "data": "data_param",
        "hdf5_data": "hdf5_data_param",
        "images": "image_data_param",
        "window_data": "window_data_param",
    },
    "rand_skip": {"data": "data_param", "images": "image_data_param"},
    "shuffle_images": {"images": "image_data_param"},
    "new_height": {"images": "image_data_param"},
    "new_width": {"images": "image_data_param"},
    "concat_dim": {"concat": "concat_param"},
    "det_fg_threshold": {"window_data": "window_data_param"},
    "det_bg_threshold": {"window_data": "window_data_param"},
    "det_fg_fraction": {"window_data": "window_data_param"},
    "det_context_pad": {"window_data": "window_data_param"},
    "det_crop_mode": {"window_data": "window_data_param"},
    "hdf5_output_param": {"hdf5_output": ""},  # the whole message, same name in V1
}
# V0 spellings that differ from the field's name in the V1 parameter message.
_RENAMED = {
    "biasterm": "bias_term",
    "kernelsize": "kernel_size",
    "batchsize": "batch_size",
    "shuffle_images": "shuffle",
    "det_fg_threshold": "fg_threshold",
    "det_bg_threshold": "bg_threshold",
    "det_fg_fraction": "fg_fraction",
    "det_context_pad": "context_pad",
    "det_crop_mode": "crop_mode",
    "meanfile": "mean_file",
    "cropsize": "crop_size",
}
# Preprocessing fields go to transform_param whatever the type, as Caffe does.
_TRANSFORM = ("scale", "meanfile", "cropsize", "mirror")
_COPIED = ("name", "type", "blobs", "blobs_lr", "weight_decay")
# NetParameter fields UpgradeV0Net carries over; it drops every other net-level field.
_NET_FIELDS = ("name", "layers", "input", "input_dim", "force_backward")


def is_padding(entry: caffe_pb2.V1LayerParameter) -> bool:
    """A V0 ``padding`` layer: removed by the upgrade, its pad moved into its reader."""
    return entry.layer.type == PADDING


def _where(path: str | None, layer: str, layer_type: str) -> str:
    kind = f" ({layer_type})" if layer_type else ""
    return f'{path + ": " if path else ""}layer "{layer}"{kind}'


def _assign(new: caffe_pb2.V1LayerParameter, field: str, target: str, value: object) -> None:
    """Set one V0 value on its V1 parameter message (appending where V1 holds a list)."""
    if not target:  # a whole sub-message with the same name in V1
        getattr(new, field).CopyFrom(value)
        return
    params = getattr(new, target)
    name = _RENAMED.get(field, field)
    descriptor = params.DESCRIPTOR.fields_by_name[name]
    if field == "pool":
        value = caffe_pb2.PoolingParameter.PoolMethod.Value(V0.PoolMethod.Name(value))
    if is_repeated(descriptor):
        getattr(params, name).append(value)
    elif descriptor.message_type is not None:
        getattr(params, name).CopyFrom(value)
    else:
        setattr(params, name, value)


def v0_layer_to_v1(
    entry: caffe_pb2.V1LayerParameter, *, path: str | None = None
) -> caffe_pb2.V1LayerParameter:
    """One V0 entry (padding already folded) as a V1 layer, as ``UpgradeV0LayerParameter``.

    Only bottom/top are taken from the outer message and everything else from the inner V0
    layer; fields that mean nothing for the layer's type are dropped with a warning.
    """
    old = entry.layer
    new = caffe_pb2.V1LayerParameter()
    new.bottom.extend(entry.bottom)
    new.top.extend(entry.top)
    if old.HasField("name"):
        new.name = old.name
    if old.HasField("type"):
        if old.type not in V0_TYPES:
            raise NetDefinitionError(
                f'unknown V0 layer type "{old.type}" (Caffe knows: {", ".join(sorted(V0_TYPES))})',
                path=path,
                layer=old.name,
            )
        new.type = V0_TYPES[old.type]
    new.blobs.extend(old.blobs)
    new.blobs_lr.extend(old.blobs_lr)
    new.weight_decay.extend(old.weight_decay)
    dropped = [
        f"outer {d.name}" for d, _ in entry.ListFields() if d.name not in ("bottom", "top", "layer")
    ]
    for descriptor, value in old.ListFields():
        field = descriptor.name
        if field in _COPIED:
            continue
        if field in _TRANSFORM:
            _assign(new, field, "transform_param", value)
        elif old.type in _TARGETS.get(field, {}):
            _assign(new, field, _TARGETS[field][old.type], value)
        else:
            dropped.append(field)
    if dropped:
        warnings.warn(
            f"{_where(path, old.name, old.type)}: V0 field(s) {', '.join(dropped)} mean nothing "
            "for this layer; ignored, as Caffe's V0 upgrade does",
            stacklevel=2,
        )
    return new


def fold_padding_layers(
    net: caffe_pb2.NetParameter, *, path: str | None = None
) -> list[caffe_pb2.V1LayerParameter]:
    """The net's V0 entries without ``padding`` layers, each pad moved into its reader.

    As ``UpgradeV0PaddingLayers``: a padding layer may only feed conv or pool layers with a
    single bottom, and must itself have one bottom and one top; the reader then takes the
    padding layer's input and its ``pad``. Every bottom must be a net input or an earlier top.
    """
    producer: dict[str, int | None] = dict.fromkeys(net.input)  # None: a net input
    kept: list[caffe_pb2.V1LayerParameter] = []
    for index, entry in enumerate(net.layers):
        layer = entry.layer
        if not is_padding(entry):
            copy = caffe_pb2.V1LayerParameter()
            copy.CopyFrom(entry)
            kept.append(copy)
        for slot, blob in enumerate(entry.bottom):
            if blob not in producer:
                raise NetDefinitionError(
                    f'bottom "{blob}" is neither a net input nor the top of an earlier layer',
                    path=path,
                    layer=layer.name,
                    layer_type=layer.type,
                )
            source_index = producer[blob]
            if source_index is None or not is_padding(net.layers[source_index]):
                continue
            source = net.layers[source_index]
            pad_name = source.layer.name
            if layer.type not in ("conv", "pool"):
                raise NetDefinitionError(
                    f'reads padding layer "{pad_name}", which only conv and pool layers can '
                    "absorb (Caffe's V0 upgrade refuses this net)",
                    path=path,
                    layer=layer.name,
                    layer_type=layer.type,
                )
            if len(entry.bottom) != 1:
                raise NetDefinitionError(
                    f'reads padding layer "{pad_name}" but has {len(entry.bottom)} bottoms; '
                    "a padded conv/pool takes exactly one",
                    path=path,
                    layer=layer.name,
                    layer_type=layer.type,
                )
            if len(source.bottom) != 1 or len(source.top) != 1:
                raise NetDefinitionError(
                    f"a padding layer needs one bottom and one top, found {len(source.bottom)} "
                    f"and {len(source.top)}",
                    path=path,
                    layer=pad_name,
                    layer_type=PADDING,
                )
            kept[-1].layer.pad = source.layer.pad
            kept[-1].bottom[slot] = source.bottom[0]
        for blob in entry.top:
            producer[blob] = index
    return kept


def upgrade_v0_net(net: caffe_pb2.NetParameter, *, path: str | None = None) -> None:
    """Rewrite a V0 net in place as a V1 net, as ``UpgradeV0Net``: fold padding layers, convert
    every layer, and keep only the net fields V0 had (name, inputs, force_backward)."""
    plain = [entry for entry in net.layers if not entry.HasField("layer")]
    if plain:
        raise NetDefinitionError(
            "net mixes V0 `layers { layer { ... } }` entries and plain V1 layers",
            path=path,
            layer=plain[0].name,
        )
    folded = fold_padding_layers(net, path=path)
    upgraded = [v0_layer_to_v1(entry, path=path) for entry in folded]
    dropped = [d.name for d, _ in net.ListFields() if d.name not in _NET_FIELDS]
    if dropped:
        warnings.warn(
            f"{path + ': ' if path else ''}net field(s) {', '.join(dropped)} are not part of "
            "the V0 format; ignored, as Caffe's V0 upgrade does",
            stacklevel=2,
        )
    kept = caffe_pb2.NetParameter()
    for name in ("name", "force_backward"):
        if net.HasField(name):
            setattr(kept, name, getattr(net, name))
    kept.input.extend(net.input)
    kept.input_dim.extend(net.input_dim)
    kept.layers.extend(upgraded)
    net.Clear()
    net.MergeFrom(kept)


def upgrade_v0_layers(
    entries: Sequence[caffe_pb2.V1LayerParameter],
    inputs: Sequence[str],
    *,
    path: str | None = None,
) -> list[caffe_pb2.V1LayerParameter]:
    """The V1 form of V0 entries read from a binary file (whose header names the inputs)."""
    net = caffe_pb2.NetParameter()
    net.input.extend(inputs)
    net.layers.extend(entries)
    upgrade_v0_net(net, path=path)
    return list(net.layers)
