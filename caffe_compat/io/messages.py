"""Small protobuf-message helpers the readers and writers share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def is_repeated(descriptor: Any) -> bool:
    """``FieldDescriptor.is_repeated`` where it exists (``label`` is gone in protobuf 7)."""
    flag = getattr(descriptor, "is_repeated", None)
    if callable(flag):
        flag = flag()
    if flag is not None:
        return bool(flag)
    return descriptor.label == descriptor.LABEL_REPEATED


def copy_without(message: M, skip: Iterable[str]) -> M:
    """A copy of ``message`` minus some fields, never copying those (they may hold weights)."""
    skip = set(skip)
    out = type(message)()
    for descriptor, value in message.ListFields():
        if descriptor.name in skip:
            continue
        if is_repeated(descriptor):
            getattr(out, descriptor.name).extend(value)
        elif descriptor.message_type is not None:
            getattr(out, descriptor.name).CopyFrom(value)
        else:
            setattr(out, descriptor.name, value)
    return out


def bad_text(message: Message) -> str | None:
    """The path of the first string field that is not UTF-8, or None.

    protobuf hands such proto2 strings back as ``bytes``, which would surface later as a
    confusing type error; readers reject them with the field's name instead.
    """
    for descriptor, value in message.ListFields():
        values = value if is_repeated(descriptor) else [value]
        if descriptor.message_type is not None:
            for item in values:
                inner = bad_text(item)
                if inner:
                    return f"{descriptor.name}.{inner}"
        elif descriptor.type == descriptor.TYPE_STRING and any(
            isinstance(item, bytes) for item in values
        ):
            return descriptor.name
    return None
