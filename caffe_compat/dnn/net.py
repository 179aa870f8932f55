"""``ConvertedNet``: a real ``cv2.dnn.Net`` running our ONNX, answering to Caffe's names.

Why a wrapper and not the ``cv2.dnn.Net`` itself: that object cannot carry the names tutorials
use. Its ONNX importer names layers after ONNX nodes (``trlayout.0``, ``fc6/flatten``... on 5.0,
``onnx_node!conv1`` on 4.x), so ``getLayerNames()`` and ``getUnconnectedOutLayersNames()`` would
not be Caffe's; OpenCV 5.0 returns a wrong buffer for ``forward(name)`` of a tensor that is not a
graph output and rejects ``forward([names])`` unless the list holds every graph output. A Python
subclass is no way out: ``readNetFromONNX`` returns the base class, and subclass instances crash
the interpreter (segfaults measured on 4.14 and 5.0.0). So ``isinstance(net, cv2.dnn.Net)`` is
False; the wrapper keeps Caffe's names on top of the real net (``cv_net``) and forwards every
other attribute to it unchanged, so ``setPreferableBackend``, ``getPerfProfile``... are OpenCV's
own. Layer edits (``getLayer(name).blobs = [...]``, ``setParam``) change the Caffe net's weights;
the next ``forward`` converts the edited net again, so an edit is never silently lost (OpenCV 4's
own reader ignores an InnerProduct edit made after the first forward: measured on 4.14).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CaffeCompatError
from .names import NetNames

if TYPE_CHECKING:
    from ..ir.load import LoadedNet

# Settings replayed on every net built for this wrapper (the every-value model, a net rebuilt
# after a layer edit), so all compute alike.
_MIRRORED = frozenset(
    {
        "setPreferableBackend",
        "setPreferableTarget",
        "enableFusion",
        "enableWinograd",
        "setInputsNames",
        "setInputShape",
    }
)


class ConvertedLayer:
    """One Caffe layer of a :class:`ConvertedNet`, as ``getLayer`` returns it.

    ``blobs`` reads the layer's weights in Caffe's shapes (read-only copies: an in-place change
    would be lost, so it raises); assigning a list of arrays replaces them, and the next
    ``forward`` computes with them. An array may have any shape with Caffe's element count
    (OpenCV's samples write a Scale layer's 313 values as 1 x 313)."""

    def __init__(self, net: ConvertedNet, name: str, layer_type: str) -> None:
        self._owner = net
        self.name = name
        self.type = layer_type

    @property
    def blobs(self) -> list[np.ndarray]:
        return self._owner._layer_blobs(self.name)

    @blobs.setter
    def blobs(self, value: Sequence[Any]) -> None:
        self._owner._set_layer_blobs(self.name, value)

    def __repr__(self) -> str:
        return f"<caffe_compat.dnn.ConvertedLayer {self.name} ({self.type})>"


class ConvertedNet:
    """A Caffe net converted to ONNX and loaded in OpenCV, with OpenCV's Caffe-reader interface.

    ``forward()``, ``forward(name)`` and ``forward([names])`` take Caffe layer names (a layer's
    own output, as OpenCV 4's Caffe reader returns it), Caffe blob names (the blob after every
    in-place layer) and ``blob@layer`` value names. ``getLayerNames()``, ``getLayerId``,
    ``getLayer`` (by id or name), ``getParam``/``setParam``, ``getUnconnectedOutLayers()`` and
    ``getUnconnectedOutLayersNames()`` use Caffe's layers, numbered as OpenCV 4 numbers them
    (0 is the input layer, then the layers in prototxt order). ``cv_net`` is the underlying
    ``cv2.dnn.Net`` (built on first use when layers still wait for their weights).
    """

    def __init__(
        self,
        net: Any,
        names: NetNames,
        reader: Callable[[bytes], Any],
        *,
        onnx: bytes | None = None,
        editable: Callable[[], LoadedNet],
        source: str | None = None,
    ) -> None:
        self._net = net  # None until every layer has weights
        self._names = names
        self._reader = reader  # ONNX bytes -> cv2.dnn.Net
        self._onnx = onnx  # the lean model's bytes, kept until the every-value net is built
        self._editable = editable
        self._loaded: LoadedNet | None = None
        self._stale = net is None
        self._full: Any = None
        self._full_outputs = tuple(names.shapes)
        self._settings: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._inputs: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._source = source

    @property
    def cv_net(self) -> Any:
        """The ``cv2.dnn.Net`` that computes the net's outputs (with every edit so far)."""
        return self._live()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # never forward private names (copy, pickle, half-built)
            raise AttributeError(name)
        if name not in _MIRRORED:
            return getattr(self._live(), name)

        def mirrored(*args: Any, **kwargs: Any) -> Any:
            result = None
            for net in (self._net, self._full):
                if net is not None:
                    result = getattr(net, name)(*args, **kwargs)
            self._settings.append((name, args, kwargs))
            return result

        return mirrored

    def __repr__(self) -> str:
        where = f" from {self._source}" if self._source else ""
        return f"<caffe_compat.dnn.ConvertedNet{where}: {len(self._names.layers)} layers>"

    def empty(self) -> bool:
        """False: the net has its layers (OpenCV's answer too for a net awaiting weights)."""
        return not self._names.layers

    # --- inputs and outputs -------------------------------------------------------------------

    def setInput(self, blob: Any, name: str = "", *args: Any, **kwargs: Any) -> None:
        """OpenCV's ``setInput(blob[, name[, scalefactor[, mean]]])``."""
        for net in (self._net, self._full):
            if net is not None and not self._stale:
                net.setInput(blob, name, *args, **kwargs)
        key = name or self._names.inputs[0]  # OpenCV's "" is the first input
        self._inputs.pop(key, None)  # replayed in the order last set
        self._inputs[key] = ((blob, name, *args), kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``forward()``, ``forward(name)`` or ``forward([names])`` (also as ``outputName=`` and
        ``outBlobNames=``): one array, or a tuple of arrays for a list of names."""
        request = _request(args, kwargs)
        if request is None:
            return self._run([self._names.default_value])[0]
        if isinstance(request, str):
            return self._run([self._resolve(request)])[0]
        return tuple(self._run([self._resolve(name) for name in request]))

    def _resolve(self, name: str) -> str:
        value = self._names.resolve(name)
        if value is None:
            raise CaffeCompatError(
                f'no layer or blob named "{name}" in this net', path=self._source
            )
        return value

    def _run(self, values: list[str]) -> list[np.ndarray]:
        lean = set(self._names.outputs)
        if all(v in lean for v in values):
            net, outputs = self._live(), self._names.outputs
        else:
            net, outputs = self._every_value_net(), self._full_outputs
        if len(values) == 1:
            return [net.forward(values[0])]
        # OpenCV 5 returns several outputs only all together.
        results = dict(zip(outputs, net.forward(list(outputs))))
        return [results[v] for v in values]

    def _prepared(self, net: Any) -> Any:
        """``net`` with this wrapper's settings and inputs replayed."""
        for name, args, kwargs in self._settings:
            getattr(net, name)(*args, **kwargs)
        for args, kwargs in self._inputs.values():
            net.setInput(*args, **kwargs)
        return net

    def _live(self) -> Any:
        """The lean net, converted again first when a layer was edited since it was built."""
        if self._stale:
            from .model import export, unset_layers

            loaded = self._edited()
            missing = unset_layers(loaded)
            if missing:
                raise CaffeCompatError(
                    f"{len(missing)} layer(s) have no weights yet: {', '.join(missing[:8])}"
                    f"{'...' if len(missing) > 8 else ''}; set them with "
                    "net.getLayer(name).blobs = [...] or net.setParam(name, i, blob) before "
                    "forward, or pass the .caffemodel",
                    path=self._source,
                )
            self._onnx = export(loaded, loaded.prototxt_path)
            self._net = self._prepared(self._reader(self._onnx))
            self._full, self._stale = None, False
        return self._net

    def _every_value_net(self) -> Any:
        net = self._live()
        if self._full is None:
            from .model import with_every_value

            assert self._onnx is not None
            self._full = self._prepared(self._reader(with_every_value(self._onnx, self._names)))
            self._onnx = None  # built once per edit (the wrapper keeps it): release the bytes
        del net
        return self._full

    # --- Caffe's layers -----------------------------------------------------------------------

    def getLayerNames(self) -> tuple[str, ...]:
        """Caffe's layers in prototxt order (inputs excluded), as OpenCV's Caffe reader lists."""
        return self._names.layers

    def getUnconnectedOutLayers(self) -> np.ndarray:
        """1-based positions in ``getLayerNames()`` of the layers producing the net's outputs."""
        index = {layer: i + 1 for i, layer in enumerate(self._names.layers)}
        return np.array([index[n] for n in self._names.unconnected_layers()], dtype=np.int32)

    def getUnconnectedOutLayersNames(self) -> tuple[str, ...]:
        return tuple(self._names.unconnected_layers())

    def getLayerId(self, layer: str) -> int:
        """OpenCV's id of a Caffe layer: its 1-based position in ``getLayerNames()``; -1 for a
        name the net does not have, as OpenCV answers (``getLayer(-1)`` then says so). A layer's
        first top also names it (OpenCV 4.14's Caffe reader names each Convolution layer after
        its top: measured), unless another layer has that name."""
        name = self._alias(layer)
        return -1 if name is None else self._names.layers.index(name) + 1

    def _alias(self, layer: str) -> str | None:
        if layer in self._names.layers:
            return layer
        for name in self._names.layers:  # values are "blob" or "blob@layer" (earlier versions)
            tops = self._names.layer_tops.get(name, ())
            if tops and tops[0].split("@")[0] == layer:
                return name
        return None

    def getLayer(self, layerId: int | str) -> ConvertedLayer:
        """The layer of an id from ``getLayerId`` or of a Caffe layer name."""
        name = self._layer_name(layerId)
        if name is None:
            return ConvertedLayer(self, "_input", "")  # OpenCV's layer 0: the inputs
        node = self._edited().graph.node(name)
        return ConvertedLayer(self, name, node.type)

    def getParam(self, layer: int | str, numParam: int = 0) -> np.ndarray:
        """Blob ``numParam`` of a layer (by id or name), in Caffe's shape."""
        blobs = self._layer_blobs(self._checked_name(layer))
        if not 0 <= numParam < len(blobs):
            raise CaffeCompatError(
                f"has {len(blobs)} blob(s), no blob {numParam}",
                path=self._source,
                layer=self._checked_name(layer),
            )
        return blobs[numParam]

    def setParam(self, layer: int | str, numParam: int, blob: Any) -> None:
        """Replace blob ``numParam`` of a layer (by id or name); the next forward uses it."""
        name = self._checked_name(layer)
        node = self._edited().graph.node(name)
        count = len(self._expected(name))
        blobs: list[Any] = list(node.blobs)
        if not 0 <= numParam < count:
            raise CaffeCompatError(
                f"has {count} blob(s), no blob {numParam}", path=self._source, layer=name
            )
        if numParam >= len(blobs):  # a layer still waiting for its weights: the rest zero
            blobs += [np.zeros(s, np.float32) for s in self._expected(name)[len(blobs) :]]
        blobs[numParam] = blob
        self._set_layer_blobs(name, blobs)

    def _layer_name(self, layer: int | str) -> str | None:
        """The Caffe layer an OpenCV layer id or name means (None: layer 0, the inputs)."""
        if isinstance(layer, str):
            if self._alias(layer) is not None:
                return self._alias(layer)
            raise CaffeCompatError(f'no layer named "{layer}" in this net', path=self._source)
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if layer == 0:
                return None
            if 0 < layer <= len(self._names.layers):
                return self._names.layers[int(layer) - 1]
            raise CaffeCompatError(
                f"no layer with id {int(layer)} in this net (ids 1 to {len(self._names.layers)}; "
                "getLayerId answers -1 for a name the net does not have)",
                path=self._source,
            )
        raise TypeError(f"a layer id (int) or name (str), not {type(layer).__name__}")

    def _checked_name(self, layer: int | str) -> str:
        name = self._layer_name(layer)
        if name is None:
            raise CaffeCompatError("layer 0 is the input layer: it has no blobs", path=self._source)
        return name

    def _input_shape(self) -> tuple[int, ...]:
        """The first input's shape in the net definition (the high-level models' input size)."""
        return tuple(self._edited().graph.shapes[self._names.inputs[0]])

    def _edited(self) -> LoadedNet:
        """The Caffe net behind this wrapper with its weights (loaded on the first edit/read)."""
        if self._loaded is None:
            self._loaded = self._editable()
        return self._loaded

    def _expected(self, name: str) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self._edited().inference.params.get(name) or []]

    def _layer_blobs(self, name: str) -> list[np.ndarray]:
        blobs = []
        for blob in self._edited().graph.node(name).blobs:
            copy = np.array(blob, dtype=np.float32)
            copy.flags.writeable = False  # an in-place change would not reach the net
            blobs.append(copy)
        return blobs

    def _set_layer_blobs(self, name: str, value: Sequence[Any]) -> None:
        node = self._edited().graph.node(name)
        bias = _has_bias_term(node.param)
        node.blobs = _fitted(value, self._expected(name), node.type, name, self._source, bias)
        self._stale = True
        self._full = None


def _has_bias_term(param: Any) -> bool:
    """Whether the layer's parameters have a ``bias_term`` (convolutions, inner products,
    Scale): its blobs after the first are then a bias, which a write may leave out."""
    return any(
        hasattr(value, "DESCRIPTOR") and "bias_term" in value.DESCRIPTOR.fields_by_name
        for _, value in param.ListFields()
    )


def _fitted(
    value: Any,
    expected: list[tuple[int, ...]],
    layer_type: str,
    name: str,
    source: str | None,
    bias: bool,
) -> list[np.ndarray]:
    """The blobs written to a layer, in Caffe's shapes, or one error saying what does not fit.
    A layer with a bias given only its weights runs without bias (OpenCV's rule)."""

    def fail(reason: str) -> CaffeCompatError:
        return CaffeCompatError(reason, path=source, layer=name, layer_type=layer_type)

    if isinstance(value, np.ndarray) or not isinstance(value, (list, tuple)):
        raise fail("blobs takes a list of arrays (layer.blobs = [weights, bias])")
    if not expected:
        raise fail("this layer has no weights to set")
    if len(value) > len(expected) or (len(value) < len(expected) and (not bias or not value)):
        raise fail(f"takes {len(expected)} blob(s) {[list(s) for s in expected]}, got {len(value)}")
    fitted = []
    for index, shape in enumerate(expected):
        if index >= len(value):  # a bias left out: none, as in OpenCV
            fitted.append(np.zeros(shape, np.float32))
            continue
        try:
            array = np.asarray(value[index], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise fail(f"blob {index} is not an array of numbers ({exc})") from None
        if array.size != int(np.prod(shape)):
            raise fail(
                f"blob {index} needs {int(np.prod(shape))} values (shape {list(shape)}), "
                f"got shape {list(array.shape)}"
            )
        fitted.append(np.array(array.reshape(shape), dtype=np.float32))  # a copy of its own
    return fitted


def _request(args: Sequence[Any], kwargs: dict[str, Any]) -> str | list[str] | None:
    """The name or names a ``forward`` call asks for (OpenCV's Python overloads)."""
    unknown = set(kwargs) - {"outputName", "outBlobNames"}
    if unknown or len(args) + len(kwargs) > 1:
        raise TypeError(
            "ConvertedNet.forward takes one output name or one list of names "
            f"(got {len(args)} positional and {sorted(kwargs)} keyword arguments)"
        )
    request = args[0] if args else next(iter(kwargs.values()), None)
    if request is None or request == "":
        return None
    if isinstance(request, str):
        return request
    if isinstance(request, (list, tuple)) and all(isinstance(n, str) for n in request):
        return list(request)
    raise TypeError(f"forward expects a name or a list of names, not {type(request).__name__}")
