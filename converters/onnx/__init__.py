"""ONNX back end: Graph -> ``onnx.ModelProto`` with a dynamic batch axis."""

from __future__ import annotations


def load_all() -> None:
    """Import every layer module so its registrations run (called by the registry)."""
    from ..._plugins import import_submodules

    import_submodules(__name__)
