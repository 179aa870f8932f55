"""ONNX back end: Graph -> ``onnx.ModelProto`` with a dynamic batch axis."""

from __future__ import annotations

DEFAULT_OPSET = 17
# The opsets written: from 13 (Softmax over one axis, Unsqueeze/Slice/Squeeze taking axes as
# inputs, which the DetectionOutput graph needs) to 23, the newest that ONNX Runtime 1.32 and
# OpenCV 5.1 run (measured on the zoo's nets for every opset in the range:
# tests/tools/test_convert.py). Importing this package does not import onnx.
MIN_OPSET = 13
MAX_OPSET = 23


def load_all() -> None:
    """Import every layer module so its registrations run (called by the registry)."""
    from ..._plugins import import_submodules

    import_submodules(__name__)
