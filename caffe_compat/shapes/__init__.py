"""Caffe's shape rules, one small function per layer type, registered on the ``shape`` back end.

Numpy-free and torch-free: inspect and the readers use these without importing a framework.
"""

from __future__ import annotations


def load_all() -> None:
    """Import every rule module so its registrations run (called by the registry)."""
    from .._plugins import import_submodules

    import_submodules(__name__)
