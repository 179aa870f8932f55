"""Layer support, keyed by (Caffe layer type, back end): the plugin point for every layer.

Back ends: ``shape`` (Caffe's shape rules, numpy only), ``torch``, ``onnx`` and ``reference`` (a
float64 numpy transcription of Caffe's forward pass, independent of the other two). Built-in
support is registered when the back end's package is first needed. A user registration for a
type that already has one pushes onto a stack and wins until it is unregistered, so forks' custom
layers and fixes plug in without editing the project::

    from caffe_compat import registry

    @registry.register("MyScale", "shape")
    def _(node, inputs):
        return registry.LayerShapes([inputs[0]], [])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import UnsupportedLayer, UnsupportedLayersError

if TYPE_CHECKING:
    from .ir.graph import Graph, Node, Shape

BACKENDS = ("shape", "torch", "onnx", "reference")
_BUILTIN_PACKAGES = {
    "shape": "caffe_compat.shapes",
    "torch": "caffe_compat.converters.torch",
    "onnx": "caffe_compat.converters.onnx",
    "reference": "caffe_compat.reference",
}


class LayerShapes(NamedTuple):
    """What a shape rule returns: one shape per top, and the shape of each parameter blob."""

    outputs: list[Shape]
    params: list[Shape]


class Unsupported(Exception):
    """Raised by a converter's check for a setting it cannot express (named in the message)."""


@dataclass(frozen=True)
class Entry:
    fn: Callable[..., Any]
    check: Callable[[Node], str | None] | None = None
    builtin: bool = False


_table: dict[tuple[str, str], list[Entry]] = {}
_loading: set[str] = set()
_loaded: set[str] = set()


def _import_builtins(backend: str) -> None:
    if backend in _loaded or backend in _loading:
        return
    _loading.add(backend)
    try:
        package = importlib.import_module(_BUILTIN_PACKAGES[backend])
        loader = getattr(package, "load_all", None)
        if loader is not None:
            loader()
        _loaded.add(backend)
    finally:
        _loading.discard(backend)


def register(
    types: str | Iterable[str],
    backend: str,
    *,
    check: Callable[[Node], str | None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` for each layer type on ``backend``.

    Inside the project's own packages a second built-in registration for the same key is a bug and
    raises; anywhere else the new entry overrides the existing one until :func:`unregister`.
    ``check(node)`` may return a reason string when a particular layer's settings are unsupported.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown back end {backend!r}; expected one of {BACKENDS}")
    names = [types] if isinstance(types, str) else list(types)

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        # By module, not only by load order: a test or user may import one built-in rule
        # module directly before the back end's built-ins were loaded.
        package = _BUILTIN_PACKAGES[backend]
        builtin = backend in _loading or fn.__module__.startswith(package + ".")
        if not builtin:
            _import_builtins(backend)  # user entries must stack above the built-ins
        for name in names:
            stack = _table.setdefault((name, backend), [])
            if builtin and any(e.builtin for e in stack):
                raise RuntimeError(f"duplicate built-in {backend} converter for {name!r}")
            stack.append(Entry(fn, check, builtin))
        return fn

    return decorator


def unregister(layer_type: str, backend: str) -> None:
    """Remove the most recent registration for (type, back end), restoring the one beneath."""
    stack = _table.get((layer_type, backend))
    if not stack:
        raise KeyError(f"nothing registered for {layer_type!r} on {backend}")
    stack.pop()


def lookup(layer_type: str, backend: str) -> Entry | None:
    """The active entry for (type, back end), loading the built-ins on first use."""
    _import_builtins(backend)
    stack = _table.get((layer_type, backend))
    return stack[-1] if stack else None


def supported_types(backend: str) -> set[str]:
    _import_builtins(backend)
    return {name for (name, b), stack in _table.items() if b == backend and stack}


def missing_support(nodes: Iterable[Node], backends: Iterable[str]) -> list[UnsupportedLayer]:
    """Every (layer, back end) pair that cannot be converted, with the reason when known."""
    missing: list[UnsupportedLayer] = []
    for node in nodes:
        for backend in backends:
            entry = lookup(node.type, backend)
            if entry is None:
                missing.append(UnsupportedLayer(node.name, node.type, backend))
                continue
            if entry.check is not None:
                reason = entry.check(node)
                if reason:
                    missing.append(UnsupportedLayer(node.name, node.type, backend, reason))
    return missing


def preflight(graph: Graph, backends: Iterable[str]) -> None:
    """Raise one error listing every unsupported layer of ``graph`` before any work is done."""
    missing = missing_support(graph.nodes, backends)
    if missing:
        raise UnsupportedLayersError(missing, path=graph.path)
