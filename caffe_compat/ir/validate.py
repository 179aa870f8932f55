"""Caffe's own checks on a net definition, made before any shape rule runs.

Caffe refuses a bad net in ``Net::Init`` and each layer's ``LayerSetUp`` with a CHECK; this module
makes the same refusals, as one-line errors naming the layer and the field:

- wiring (``validate_net``, from ``build_graph``): every bottom produced by an earlier layer, one
  producer per blob unless a layer writes in place (top j == bottom j, Caffe's ``AppendTop``).
  Layer names may repeat, as Caffe allows; ``infer.py`` refuses a repeated name only where a
  layer bearing it has parameters (the weights would attach to one of them only);
- per layer (``layer_problem``, from ``infer_shapes`` before the shape rule): the bottom and top
  counts the type declares (``CheckBlobCounts``), unsigned fields whose value does not fit the
  ``int`` Caffe stores them in, and the type's own ``validate`` fact (its family's shapes file);
- per blob (``shape_problem``): at most ``MAX_BLOB_AXES`` axes, positive dims and at most
  ``MAX_BLOB_COUNT`` values, Caffe's ``Blob::Reshape`` limits, which also bound every dim.

Layers the state leaves out, and training layers (dropped from inference graphs), are not checked:
Caffe never sets them up for this state, and nothing here runs them. A net built for training
checks its training layers like any other, and its data layers' label tops are inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .. import registry
from ..errors import NetDefinitionError
from ..io.messages import is_repeated
from ..proto import caffe_pb2
from .phase import NetState, layer_included

INT32_MAX = 2**31 - 1
# Blob::Reshape CHECKs count <= INT_MAX: no blob, parameter or input holds more values.
MAX_BLOB_COUNT = INT32_MAX
MAX_BLOB_AXES = 32  # kMaxBlobAxes (blob.hpp), also CHECKed by Blob::Reshape
# uint32 fields Caffe keeps unsigned (seeds, skips, counts of a training loop): they cannot wrap.
_UNSIGNED_IN_CAFFE = frozenset(
    {"rand_skip", "prefetch", "skip_frames", "max_trials", "max_sample", "num_test_image"}
)


def wrapped_field(message: Message, prefix: str = "") -> str | None:
    """The first uint32 field holding a value past INT32_MAX, which Caffe's ``int`` would read
    as a negative number (``pad: 4294967295`` is pad -1 to Caffe), described; None if none."""
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            items = value if is_repeated(field) else [value]
            for item in items:
                found = wrapped_field(item, name + ".")
                if found:
                    return found
        elif field.type == FieldDescriptor.TYPE_UINT32 and field.name not in _UNSIGNED_IN_CAFFE:
            values = value if is_repeated(field) else [value]
            for number in values:
                if number > INT32_MAX:
                    return (
                        f"{name} {number} does not fit Caffe's int (it would read "
                        f"{number - 2**32}); the largest value is {INT32_MAX}"
                    )
    return None


def _count_rule(rule: int | tuple[int, int | None] | None) -> tuple[int, int | None] | None:
    if rule is None:
        return None
    return (rule, rule) if isinstance(rule, int) else rule


def _count_problem(what: str, have: int, rule: int | tuple[int, int | None] | None) -> str | None:
    bounds = _count_rule(rule)
    if bounds is None:
        return None
    low, high = bounds
    if low <= have and (high is None or have <= high):
        return None
    if low == high:
        wanted = f"exactly {low}"
    elif high is None:
        wanted = f"at least {low}"
    else:
        wanted = f"{low} to {high}"
    return f"takes {wanted} {what}, has {have}"


def blob_count_problem(layer: caffe_pb2.LayerParameter) -> str | None:
    """Caffe's ``CheckBlobCounts`` for the layer's type (types without declared counts pass)."""
    facts = registry.facts(layer.type)
    bottoms, tops = len(layer.bottom), len(layer.top)
    problem = _count_problem("bottom(s)", bottoms, facts.bottoms) or _count_problem(
        "top(s)", tops, facts.tops
    )
    if problem is None and facts.same_count and bottoms != tops:
        problem = f"needs as many tops as bottoms, has {bottoms} bottom(s) and {tops} top(s)"
    return problem


def layer_problem(layer: caffe_pb2.LayerParameter) -> str | None:
    """What Caffe's set-up of this one layer would refuse, before any shape is known."""
    problem = blob_count_problem(layer) or wrapped_field(layer)
    if problem:
        return problem
    check = registry.facts(layer.type).validate
    if check is not None:
        try:
            check(layer)
        except ValueError as exc:
            return str(exc)
    return None


def _count_text(count: int) -> str:
    """A value count for a message: exact while readable, its order of magnitude beyond."""
    if count < 10**18:
        return f"{count:,}"
    return f"about 10^{math.floor(math.log10(count))}"


def shape_problem(shape: Sequence[int]) -> str | None:
    """Why a blob of this shape cannot exist in Caffe (over ``kMaxBlobAxes`` axes, dims not
    positive, too many values): Blob::Reshape's CHECKs."""
    if len(shape) > MAX_BLOB_AXES:
        return f"it has {len(shape):,} axes, over Caffe's limit of {MAX_BLOB_AXES} (kMaxBlobAxes)"
    bad = [d for d in shape if d < 1]
    if bad:
        shown = f"{bad[0]:,}" if bad[0] > -(10**18) else "below -10^18"
        return f"dim {shown} is not positive"
    count = math.prod(shape)
    if count > MAX_BLOB_COUNT:
        return (
            f"it holds {_count_text(count)} values, over Caffe's limit of {MAX_BLOB_COUNT:,} per "
            "blob (Blob::Reshape)"
        )
    return None


def format_shape(shape: Sequence[int]) -> str:
    """``1x3x224x224``; a shape with many axes or huge dims abbreviated, so a message stays one
    readable line whatever a file declares."""
    if not shape:
        return "scalar"
    dims = [str(d) if abs(d) < 10**18 else ("huge" if d > 0 else "-huge") for d in shape]
    if len(dims) > 8:
        return "x".join(dims[:4]) + "x...x" + "x".join(dims[-2:]) + f" ({len(dims):,} axes)"
    return "x".join(dims)


_fmt = format_shape


def check_input_shape(
    shape: Sequence[int] | None, blob: str, layer: caffe_pb2.LayerParameter, path: str | None
) -> None:
    """An input's declared (or overridden) shape: every dim positive, the blob within limits."""
    if shape is None:
        return
    problem = shape_problem(shape) if shape else "an input needs at least one axis (the batch)"
    if problem:
        role = registry.role(layer.type)
        source = "input_param or input_dim" if role == "input" else "its data layer's shape"
        raise NetDefinitionError(
            f'input "{blob}" ({source}) is {_fmt(shape)}: {problem}',
            path=path,
            layer=layer.name,
            layer_type=layer.type,
        )


def data_shapes(layer: caffe_pb2.LayerParameter, where: dict) -> list:
    """A data layer's top shapes (None for labels), its errors given the file and line."""
    try:
        return list(registry.facts(layer.type).data_shape(layer, []))
    except NetDefinitionError as exc:
        raise NetDefinitionError(exc.reason, **where) from None


def _phase_hint(net: caffe_pb2.NetParameter, state: NetState, blob: str) -> str:
    """When a layer left out by phase, stage or level produces ``blob``, say so."""
    hidden = [
        layer.name for layer in net.layer if blob in layer.top and not layer_included(state, layer)
    ]
    if not hidden:
        return ""
    stages = ", ".join(sorted(state.stages)) or "none"
    return (
        f"; layer {', '.join(repr(n) for n in hidden[:3])} produces it in another phase or "
        f"stage (this is phase {state.phase}, stages {stages}, level {state.level}): choose "
        "with --phase/--stage/--level (phase=/stages=/level= in Python)"
    )


def validate_net(
    net: caffe_pb2.NetParameter,
    state: NetState,
    *,
    path: str | None = None,
    lines: Mapping[str, int] | None = None,
    training: bool = False,
) -> None:
    """Raise the first wiring error of the layers ``state`` keeps, as Caffe's Net::Init would
    (``training``: for the net built for training, see build.py)."""
    lines = lines or {}
    producer: dict[str, str] = {}  # blob -> the layer that last wrote it
    labels: dict[str, str] = {}  # label tops of data layers -> their layer
    for layer in net.layer:
        if not layer_included(state, layer):
            continue
        role = registry.facts(layer.type).role
        if role == "training" and not training:
            continue  # dropped, never run here: its name may repeat another (as in Caffe)
        where = {
            "path": path,
            "layer": layer.name,
            "layer_type": layer.type,
            "line": lines.get(layer.name),
        }
        empty = [
            f"{side} {i}"
            for side in ("bottom", "top")
            for i, blob in enumerate(getattr(layer, side))
            if not blob
        ]
        if empty:
            raise NetDefinitionError(
                f"{empty[0]} has an empty name; name the blob (every back end here refers to "
                "blobs by name)",
                **where,
            )
        inputs = [True] * len(layer.top)  # which tops are graph inputs (not labels)
        if role in ("input", "data"):
            problem = layer_problem(layer)
            if problem:
                raise NetDefinitionError(problem, **where)
            if role == "data":
                shapes = data_shapes(layer, where)
                if not training:
                    inputs = [i == 0 or s is not None for i, s in enumerate(shapes)]
        else:
            for blob in layer.bottom:
                if blob in labels:
                    raise NetDefinitionError(
                        f'bottom "{blob}" is the label top of data layer "{labels[blob]}", '
                        "which an inference graph has no input for",
                        **where,
                    )
                if blob not in producer:
                    raise NetDefinitionError(
                        f'bottom "{blob}" is not produced by any earlier layer or input'
                        + _phase_hint(net, state, blob),
                        **where,
                    )
        for index, blob in enumerate(layer.top):
            if blob in layer.top[:index]:
                raise NetDefinitionError(f'lists top "{blob}" twice', **where)
            in_place = index < len(layer.bottom) and layer.bottom[index] == blob
            if not in_place and (blob in producer or blob in labels):
                first = producer.get(blob) or labels[blob]
                raise NetDefinitionError(
                    f'top "{blob}" is already produced by layer "{first}": Caffe lets a layer '
                    "rewrite a blob only in place (top j named as bottom j)",
                    **where,
                )
            if not inputs[index]:
                labels[blob] = layer.name
            else:
                producer[blob] = layer.name
