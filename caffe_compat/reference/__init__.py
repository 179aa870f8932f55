"""Caffe's forward pass in float64 numpy: the independent reference the back ends are judged by.

Each layer type is one small function registered on the ``reference`` back end, transcribed from
the semantics of BVLC Caffe's ``src/caffe/layers/*.cpp`` (and W. Liu's SSD fork for Permute,
Normalize, PriorBox and DetectionOutput). By construction it shares nothing with the PyTorch and
ONNX back ends but the graph, the shape rules and their geometry helpers::

    from caffe_compat.reference import forward

    blobs = forward(net, {"data": x}, outputs=["norm1", "prob"])  # float64 arrays by blob name
"""

from __future__ import annotations

import importlib
import pkgutil

from .run import forward

__all__ = ["forward", "load_all"]


def load_all() -> None:
    """Import every layer module so its registrations run (called by the registry)."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
