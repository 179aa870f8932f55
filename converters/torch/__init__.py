"""PyTorch back end: Graph -> ``CaffeNet`` (an ``nn.Module``) with Caffe-exact layers."""

from __future__ import annotations


def load_all() -> None:
    """Import every layer module so its registrations run (called by the registry)."""
    from ..._plugins import import_submodules

    import_submodules(__name__)
