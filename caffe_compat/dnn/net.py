"""``ConvertedNet``: a real ``cv2.dnn.Net`` running our ONNX, answering to Caffe's names.

Why a wrapper and not the ``cv2.dnn.Net`` itself: that object cannot carry the names tutorials
use. Its ONNX importer names layers after ONNX nodes (``trlayout.0``, ``fc6/flatten``... on 5.0,
``onnx_node!conv1`` on 4.x), so ``getLayerNames()`` and ``getUnconnectedOutLayersNames()`` would
not be Caffe's; OpenCV 5.0 returns a wrong buffer for ``forward(name)`` of a tensor that is not a
graph output and rejects ``forward([names])`` unless the list holds every graph output. A Python
subclass is no way out: ``readNetFromONNX`` returns the base class, and subclass instances crash
the interpreter (segfaults measured on 4.14 and 5.0.0). So ``isinstance(net, cv2.dnn.Net)`` is
False; the wrapper keeps Caffe's names on top of the real net (``cv_net``) and forwards every
other attribute to it unchanged, so ``setPreferableBackend``, ``getPerfProfile``, ``empty``...
are OpenCV's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import CaffeCompatError
from .names import NetNames

# Settings replayed on the every-value model when it is built, so both nets compute alike.
_MIRRORED = frozenset(
    {
        "setPreferableBackend",
        "setPreferableTarget",
        "enableFusion",
        "enableWinograd",
        "setInputsNames",
        "setInputShape",
        "setParam",
    }
)


class ConvertedNet:
    """A Caffe net converted to ONNX and loaded in OpenCV, with OpenCV's Caffe-reader interface.

    ``forward()``, ``forward(name)`` and ``forward([names])`` take Caffe layer names (a layer's
    own output, as OpenCV 4's Caffe reader returns it), Caffe blob names (the blob after every
    in-place layer) and ``blob@layer`` value names. ``getLayerNames()``,
    ``getUnconnectedOutLayers()`` and ``getUnconnectedOutLayersNames()`` list Caffe's layers;
    ``getLayer``/``getLayerId`` and other per-layer calls refer to the converted net's own layers.
    ``cv_net`` is the underlying ``cv2.dnn.Net``.
    """

    def __init__(
        self,
        net: Any,
        names: NetNames,
        every_value_net: Callable[[], Any],
        *,
        source: str | None = None,
    ) -> None:
        self._net = net
        self._names = names
        self._make_full = every_value_net
        self._full: Any = None
        self._full_outputs = tuple(names.shapes)
        self._settings: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._inputs: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._source = source

    @property
    def cv_net(self) -> Any:
        """The ``cv2.dnn.Net`` that computes the net's outputs."""
        return self._net

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # never forward private names (copy, pickle, half-built)
            raise AttributeError(name)
        attribute = getattr(self._net, name)
        if name not in _MIRRORED:
            return attribute

        def mirrored(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if self._full is not None:
                getattr(self._full, name)(*args, **kwargs)
            self._settings.append((name, args, kwargs))
            return result

        return mirrored

    def __repr__(self) -> str:
        where = f" from {self._source}" if self._source else ""
        return f"<caffe_compat.dnn.ConvertedNet{where}: {len(self._names.layers)} layers>"

    # --- inputs and outputs -------------------------------------------------------------------

    def setInput(self, blob: Any, name: str = "", *args: Any, **kwargs: Any) -> None:
        """OpenCV's ``setInput(blob[, name[, scalefactor[, mean]]])``."""
        self._net.setInput(blob, name, *args, **kwargs)
        if self._full is not None:
            self._full.setInput(blob, name, *args, **kwargs)
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
            net, outputs = self._net, self._names.outputs
        else:
            net, outputs = self._every_value_net(), self._full_outputs
        if len(values) == 1:
            return [net.forward(values[0])]
        # OpenCV 5 returns several outputs only all together.
        results = dict(zip(outputs, net.forward(list(outputs))))
        return [results[v] for v in values]

    def _every_value_net(self) -> Any:
        if self._full is None:
            full = self._make_full()
            for name, args, kwargs in self._settings:
                getattr(full, name)(*args, **kwargs)
            for args, kwargs in self._inputs.values():
                full.setInput(*args, **kwargs)
            self._full = full
        return self._full

    # --- Caffe's layer names ------------------------------------------------------------------

    def getLayerNames(self) -> tuple[str, ...]:
        """Caffe's layers in prototxt order (inputs excluded), as OpenCV's Caffe reader lists."""
        return self._names.layers

    def getUnconnectedOutLayers(self) -> np.ndarray:
        """1-based positions in ``getLayerNames()`` of the layers producing the net's outputs."""
        index = {layer: i + 1 for i, layer in enumerate(self._names.layers)}
        return np.array([index[n] for n in self._names.unconnected_layers()], dtype=np.int32)

    def getUnconnectedOutLayersNames(self) -> tuple[str, ...]:
        return tuple(self._names.unconnected_layers())


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
