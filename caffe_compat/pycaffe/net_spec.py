"""``caffe.NetSpec``, ``caffe.layers`` (``L``), ``caffe.params`` (``P``), ``caffe.to_proto``.

Writing nets in Python builds a NetParameter only, so it works here as in Caffe, training nets
included; only running a solver on them is refused. Names of unnamed tops are generated as Caffe
does (type name plus a counter), keyword arguments go to the layer's ``<type>_param`` message
when it has such a field and to the LayerParameter otherwise, lists fill repeated fields and
dicts fill sub-messages.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

from ..proto import caffe_pb2


def param_name_dict() -> dict[str, str]:
    """Layer type name -> prefix of its parameter field, e.g. 'Convolution' -> 'convolution'."""
    layer = caffe_pb2.LayerParameter()
    out = {}
    for field in layer.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                out[type_name[: -len("Parameter")]] = field.name[: -len("_param")]
    return out


def assign_proto(proto: Any, name: str, val: Any) -> None:
    """Set field ``name`` of ``proto`` from a Python value (recursively; a scalar given to a
    repeated field becomes a one-element list)."""
    field = getattr(proto, name)
    if hasattr(field, "extend") and not isinstance(val, list):
        val = [val]
    if isinstance(val, list):
        if val and isinstance(val[0], dict):
            for item in val:
                message = field.add()
                for key, value in item.items():
                    assign_proto(message, key, value)
        else:
            field.extend(val)
    elif isinstance(val, dict):
        for key, value in val.items():
            assign_proto(field, key, value)
    else:
        setattr(proto, name, val)


def to_proto(*tops: Top) -> caffe_pb2.NetParameter:
    """A NetParameter with every layer needed to compute ``tops`` (automatic names)."""
    layers: OrderedDict[Function, caffe_pb2.LayerParameter] = OrderedDict()
    autonames: Counter[str] = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Top:
    """One output blob of a layer function (the ``n``-th)."""

    def __init__(self, fn: Function, n: int) -> None:
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        return to_proto(self)

    def _to_proto(self, layers: OrderedDict, names: dict, autonames: Counter) -> None:
        self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its input Tops and its parameters (``ntop``, ``in_place`` apart)."""

    def __init__(self, type_name: str, inputs: tuple, params: dict[str, Any]) -> None:
        self.type_name = type_name
        for index, value in enumerate(inputs):
            if not isinstance(value, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(value)})")
        self.inputs = inputs
        self.params = params
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_top_name(self, top: Top, names: dict, autonames: Counter) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _get_name(self, names: dict, autonames: Counter) -> str:
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _to_proto(self, layers: OrderedDict, names: dict, autonames: Counter) -> None:
        if self in layers:
            return
        bottoms = []
        for value in self.inputs:
            value._to_proto(layers, names, autonames)
            bottoms.append(layers[value.fn].top[value.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for key, value in self.params.items():
            if key.endswith("param"):
                assign_proto(layer, key, value)
                continue
            try:
                assign_proto(getattr(layer, _param_names[self.type_name] + "_param"), key, value)
            except (AttributeError, KeyError):
                assign_proto(layer, key, value)
        layers[self] = layer


class NetSpec:
    """Named tops, assigned as attributes (``n.conv1 = L.Convolution(n.data, ...)``)."""

    def __init__(self) -> None:
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value: Any) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str) -> Any:
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key: str, value: Any) -> None:
        self.__setattr__(key, value)

    def __getitem__(self, item: str) -> Any:
        return self.tops[item]

    def to_proto(self) -> caffe_pb2.NetParameter:
        """A NetParameter with the assigned tops' layers, named as assigned."""
        names = {value: key for key, value in self.tops.items()}
        autonames: Counter[str] = Counter()
        layers: OrderedDict[Function, caffe_pb2.LayerParameter] = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``L.Convolution(bottom, kernel_size=3)`` -> a Top (or Tops with ``ntop``, or the Function
    itself with ``ntop=0``)."""

    def __getattr__(self, name: str) -> Any:
        def layer_fn(*args: Top, **kwargs: Any) -> Any:
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        return layer_fn


class Parameters:
    """``P.Pooling.MAX`` -> the enum value from ``PoolingParameter``."""

    def __getattr__(self, name: str) -> Any:
        message = getattr(caffe_pb2, name + "Parameter")

        class Param:
            def __getattr__(self, param_name: str) -> Any:
                return getattr(message, param_name)

        return Param()


_param_names = param_name_dict()
layers = Layers()
params = Parameters()
