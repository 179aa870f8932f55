"""A seeded mutator over Caffe net definitions, for the fuzz tests and the long fuzz run.

Each case is one seed net (the project's own test prototxts) with one to three mutations made on
the parsed message and printed back as text: a number set to a boundary value (0, -1, 2^31 - 1,
2^32 - 1, huge; inf and NaN for floats), a field added, dropped or repeated, a layer deleted,
duplicated or moved, bottoms and tops swapped or rewired, a layer given a random registered type,
a phase rule added, a layer or blob renamed with a hostile name (fuzz/names.py); now and then
the text itself is cut short. ``Mutator(seeds, seed).case(i)``
is the same case on every machine.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message import Message

from caffe_compat import registry
from caffe_compat.io.messages import is_repeated
from caffe_compat.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[2]
SEED_FOLDERS = ("tests/fuzz/seeds", "tests/nets/data", "tests/converters/data", "zoo")

INT32 = [0, -1, 1, 2, 3, -(2**31), 2**31 - 1, 100000]
UINT32 = [0, 1, 2, 3, 7, 2**31 - 1, 2**31, 2**32 - 1, 100000]
INT64 = [0, -1, 1, 2, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**63 - 1, 100000]
UINT64 = [0, 1, 2**32, 2**64 - 1]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-30, 1e30, -1e30, math.inf, -math.inf, math.nan]
_INTS = {
    FD.TYPE_INT32: INT32,
    FD.TYPE_SINT32: INT32,
    FD.TYPE_SFIXED32: INT32,
    FD.TYPE_UINT32: UINT32,
    FD.TYPE_FIXED32: UINT32,
    FD.TYPE_INT64: INT64,
    FD.TYPE_SINT64: INT64,
    FD.TYPE_SFIXED64: INT64,
    FD.TYPE_UINT64: UINT64,
    FD.TYPE_FIXED64: UINT64,
}
_FLOATS = (FD.TYPE_FLOAT, FD.TYPE_DOUBLE)
_LEAVES = (*_INTS, *_FLOATS, FD.TYPE_BOOL, FD.TYPE_ENUM)


def seed_nets(root: Path = ROOT) -> list[tuple[str, str]]:
    """(name, text) of every seed prototxt, sorted by name."""
    found = []
    for folder in SEED_FOLDERS:
        for path in sorted((root / folder).glob("*.prototxt")):
            found.append((f"{folder}/{path.name}", path.read_text()))
    return found


def _value(field: FD, rng: random.Random) -> object:
    if field.type in _INTS:
        return rng.choice(_INTS[field.type])
    if field.type in _FLOATS:
        return rng.choice(FLOATS)
    if field.type == FD.TYPE_BOOL:
        return rng.random() < 0.5
    return rng.choice(field.enum_type.values).number


def _leaves(message: Message) -> Iterator[tuple[Message, FD, int | None]]:
    """Every set numeric, bool or enum value: (owner, field, index in a repeated field)."""
    for field, value in message.ListFields():
        if field.type == FD.TYPE_MESSAGE:
            for item in value if is_repeated(field) else [value]:
                yield from _leaves(item)
        elif field.type in _LEAVES:
            if is_repeated(field):
                for index in range(len(value)):
                    yield message, field, index
            else:
                yield message, field, None


def _messages(message: Message) -> Iterator[Message]:
    """The message and every sub-message set inside it."""
    yield message
    for field, value in message.ListFields():
        if field.type == FD.TYPE_MESSAGE:
            for item in value if is_repeated(field) else [value]:
                yield from _messages(item)


def _set(owner: Message, field: FD, index: int | None, value: object) -> None:
    if index is None:
        setattr(owner, field.name, value)
    else:
        getattr(owner, field.name)[index] = value


@dataclass
class Case:
    seed: str  # the seed net's name
    ops: list[str]  # what was done, for the report
    text: str  # the mutated definition


class Mutator:
    """Deterministic cases over ``seeds`` ((name, text) pairs) for one run ``seed``."""

    def __init__(self, seeds: Iterable[tuple[str, str]], seed: int = 0) -> None:
        self.seed = seed
        self.seeds: list[tuple[str, caffe_pb2.NetParameter]] = []
        for name, text in seeds:
            net = caffe_pb2.NetParameter()
            text_format.Merge(text, net)
            self.seeds.append((name, net))
        self.types = sorted(registry.supported_types("shape") | registry.described_types())
        self.v1_types = list(caffe_pb2.V1LayerParameter.LayerType.values())
        self.params = [
            f for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields if f.name.endswith("_param")
        ]

    def case(self, index: int, weights: Iterable[float] | None = None) -> Case:
        """Case ``index``: a seed chosen by ``weights`` (uniform by default), 1-3 mutations."""
        rng = random.Random(f"{self.seed}:{index}")
        (name, seed_net) = rng.choices(self.seeds, weights=list(weights) if weights else None)[0]
        net = caffe_pb2.NetParameter()
        net.CopyFrom(seed_net)
        ops = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            ops.append(self._mutate(net, rng))
        text = text_format.MessageToString(net)
        if rng.random() < 0.02:
            cut = rng.randrange(len(text) + 1)
            text, ops = text[:cut], [*ops, f"text cut at {cut}"]
        return Case(name, ops, text)

    # --- mutations -----------------------------------------------------------------------------

    def _layers(self, net: caffe_pb2.NetParameter):
        return net.layer if len(net.layer) else net.layers

    def _mutate(self, net: caffe_pb2.NetParameter, rng: random.Random) -> str:
        layers = self._layers(net)
        if not len(layers):
            return self._number(net, rng)
        layer = layers[rng.randrange(len(layers))]
        action = rng.choices(
            ["number", "add", "drop", "repeat", "layers", "wiring", "type", "phase", "rename"],
            weights=[30, 18, 8, 5, 8, 14, 10, 4, 6],
        )[0]
        if action == "rename":
            return self._rename(net, layer, rng)
        if action == "number":
            return self._number(layer if rng.random() < 0.9 else net, rng)
        if action == "add":
            return self._add(layer, rng)
        if action == "drop":
            return self._drop(layer, rng)
        if action == "repeat":
            return self._repeat(layer, rng)
        if action == "layers":
            return self._layer_list(layers, rng)
        if action == "wiring":
            return self._wiring(net, layer, rng)
        if action == "type":
            return self._type(layer, rng)
        rule = layer.include.add() if rng.random() < 0.5 else layer.exclude.add()
        if rng.random() < 0.5:
            rule.phase = rng.choice((caffe_pb2.TRAIN, caffe_pb2.TEST))
        else:
            rule.stage.append(rng.choice(("deploy", "test-on-test", "x")))
        return f"{layer.name}: phase rule"

    def _number(self, message: Message, rng: random.Random) -> str:
        leaves = list(_leaves(message))
        if not leaves:
            return "no number to change"
        owner, field, index = rng.choice(leaves)
        value = _value(field, rng)
        _set(owner, field, index, value)
        return f"{getattr(message, 'name', 'net')}: {field.name} = {value}"

    def _add(self, layer: Message, rng: random.Random) -> str:
        if isinstance(layer, caffe_pb2.LayerParameter) and rng.random() < 0.2:
            param = getattr(layer, rng.choice(self.params).name)  # a foreign parameter message
        else:
            param = rng.choice(list(_messages(layer)))
        fields = [f for f in param.DESCRIPTOR.fields if f.type in _LEAVES]
        if not fields:
            return "no field to add"
        field = rng.choice(fields)
        value = _value(field, rng)
        if is_repeated(field):
            getattr(param, field.name).append(value)
        else:
            setattr(param, field.name, value)
        return f"{layer.name}: add {param.DESCRIPTOR.name}.{field.name} = {value}"

    def _drop(self, layer: Message, rng: random.Random) -> str:
        owners = [
            (m, f) for m in _messages(layer) for f, _ in m.ListFields() if f.name not in ("name",)
        ]
        if not owners:
            return "no field to drop"
        owner, field = rng.choice(owners)
        owner.ClearField(field.name)
        return f"{layer.name}: drop {field.name}"

    def _repeat(self, layer: Message, rng: random.Random) -> str:
        repeated = [
            (m, f)
            for m in _messages(layer)
            for f, v in m.ListFields()
            if is_repeated(f) and f.type != FD.TYPE_MESSAGE and len(v)
        ]
        if not repeated:
            return "nothing to repeat"
        owner, field = rng.choice(repeated)
        values = getattr(owner, field.name)
        values.append(values[rng.randrange(len(values))])
        return f"{layer.name}: repeat {field.name}"

    def _layer_list(self, layers, rng: random.Random) -> str:
        index = rng.randrange(len(layers))
        choice = rng.choice(("delete", "duplicate", "move"))
        copies = [type(layers[0])() for _ in range(len(layers))]
        for copy, layer in zip(copies, layers):
            copy.CopyFrom(layer)
        name = copies[index].name
        if choice == "delete":
            del copies[index]
        elif choice == "duplicate":
            copies.insert(rng.randrange(len(copies) + 1), copies[index])
        else:
            moved = copies.pop(index)
            copies.insert(rng.randrange(len(copies) + 1), moved)
        del layers[:]
        layers.extend(copies)
        return f"{name}: {choice} layer"

    def _wiring(self, net, layer, rng: random.Random) -> str:
        blobs = sorted({b for item in self._layers(net) for b in (*item.top, *item.bottom)})
        blobs += [*net.input, "nowhere"]
        ends = [e for e in ("bottom", "top") if len(getattr(layer, e))]
        end = rng.choice(ends or ["bottom"])
        names = getattr(layer, end)
        choice = rng.choice(("swap", "rewire", "remove", "add", "cross"))
        if choice == "swap" and len(names) > 1:
            i, j = rng.sample(range(len(names)), 2)
            names[i], names[j] = names[j], names[i]
        elif choice == "rewire" and len(names):
            names[rng.randrange(len(names))] = rng.choice(blobs)
        elif choice == "remove" and len(names):
            del names[rng.randrange(len(names))]
        elif choice == "cross" and len(layer.bottom) and len(layer.top):
            i, j = rng.randrange(len(layer.bottom)), rng.randrange(len(layer.top))
            layer.bottom[i], layer.top[j] = layer.top[j], layer.bottom[i]
        else:
            names.append(rng.choice(blobs))
        return f"{layer.name}: {choice} {end}"

    def _type(self, layer, rng: random.Random) -> str:
        if isinstance(layer, caffe_pb2.LayerParameter):
            layer.type = rng.choice(self.types)
            return f"{layer.name}: type {layer.type}"
        layer.type = rng.choice(self.v1_types)
        return f"{layer.name}: V1 type {layer.type}"

    def _rename(self, net, layer, rng: random.Random) -> str:
        """A hostile name (line breaks, escapes, bidi controls: fuzz/names.py) for the layer, or
        for one of its tops everywhere it is used, so the net stays valid and its names reach
        every output."""
        from fuzz.names import hostile_name

        name = hostile_name(rng)
        if not len(layer.top) or rng.random() < 0.4:
            old, layer.name = layer.name, name
            return f"{old}: renamed {name!r}"
        blob = layer.top[rng.randrange(len(layer.top))]
        for item in self._layers(net):
            for names in (item.bottom, item.top):
                for index, value in enumerate(names):
                    if value == blob:
                        names[index] = name
        for index, value in enumerate(net.input):
            if value == blob:
                net.input[index] = name
        return f"blob {blob}: renamed {name!r}"
