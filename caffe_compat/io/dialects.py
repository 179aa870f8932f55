"""Which fork's meaning a layer has, settled from the net before anything reads its settings.

Caffe forks added parameter messages at field numbers that BVLC Caffe or another fork also uses
(docs/forks.md lists them): caffe-segnet's ``upsample_param`` and yjxiong's ``bn_param`` sit at
137, BVLC's ``embed_param``; DeepLab v2's and PSPNet's ``interp_param`` at 143, BVLC's
``input_param``; PSPNet's ``bn_param`` at 152, which this schema leaves unnamed. A net written as
text names its fields, so it parses as meant; a binary one parses such a message into the other
field (or keeps it as an unknown field). The layer's type says which was meant: a type's
``dialect`` fact (declared beside its shape rule) calls :func:`rescue` to move the message to its
own field, and settles a type name two forks share (BN, Upsample) from the layer's fields and,
when weights come with the net, the number of blobs they hold for it. It records the decision in
the layer's own fields, so every back end reads one answer. A type's ``net_settings`` fact does
the same for settings its C++ derives from the layers around it (RCF's AutoCrop offsets).
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf import unknown_fields

from ..proto import caffe_pb2
from .wire import write_key, write_varint

LENGTH_DELIMITED = 2  # the wire type of an embedded message


def rescue(
    layer: caffe_pb2.LayerParameter,
    target: str,
    *,
    parsed_as: tuple[str, ...] = (),
    unknown: tuple[int, ...] = (),
) -> bool:
    """Move a message a fork wrote at another number into ``layer.<target>``: from the fields
    ``parsed_as`` (a number BVLC holds, parsed there) and the unknown fields ``unknown``. Fields
    the target does not know stay unknown in it. True when something moved."""
    moved = False
    field = getattr(layer, target)
    for name in parsed_as:
        if layer.HasField(name):
            data = getattr(layer, name).SerializeToString()
            layer.ClearField(name)
            field.MergeFromString(data)
            moved = True
    if unknown:
        found = [
            item
            for item in unknown_fields.UnknownFieldSet(layer)
            if item.field_number in unknown and item.wire_type == LENGTH_DELIMITED
        ]
        if found:
            kept = _without_unknown(layer, set(unknown))
            layer.Clear()
            layer.MergeFromString(kept)
            for item in found:
                getattr(layer, target).MergeFromString(item.data)
            moved = True
    return moved


def _without_unknown(layer: caffe_pb2.LayerParameter, numbers: set[int]) -> bytes:
    """The layer's bytes without the unknown fields ``numbers``."""
    copy = caffe_pb2.LayerParameter()
    copy.CopyFrom(layer)
    copy.DiscardUnknownFields()
    others = [
        item for item in unknown_fields.UnknownFieldSet(layer) if item.field_number not in numbers
    ]
    data = copy.SerializeToString()
    for item in others:  # keep the rest as they came (only embedded messages are re-encoded)
        if item.wire_type == LENGTH_DELIMITED:
            data += (
                write_key(item.field_number, LENGTH_DELIMITED)
                + write_varint(len(item.data))
                + item.data
            )
    return data


def settle(net: caffe_pb2.NetParameter, blob_counts: Mapping[str, int] | None = None) -> list[str]:
    """Run each layer's ``dialect`` fact (see the module docstring); returns one note per
    layer whose meaning was decided from more than its own text (a moved field, a blob count)."""
    from .. import registry  # the facts live with the shape rules

    notes = []
    counts = blob_counts or {}
    for layer in net.layer:
        info = registry.facts(layer.type)
        for note in (
            info.dialect(layer, counts.get(layer.name)) if info.dialect else None,
            info.net_settings(layer, net) if info.net_settings else None,
        ):
            if note:
                notes.append(f'layer "{layer.name}" ({layer.type}): {note}')
    return notes
