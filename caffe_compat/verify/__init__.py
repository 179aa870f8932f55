"""``verify``: run one net through independent judges (OpenCV 4's Caffe reader on the same files,
stored reference arrays) and through our back ends (PyTorch on CPU and CUDA, our ONNX model in
ONNX Runtime), and compare every shared blob.

- ``opencv.py``: the OpenCV 4 judge; ``stored.py``: arrays saved by real Caffe (or anyone);
- ``backends.py``: our own back ends under test;
- ``compare.py``: the tolerance rule, one comparison row, the report; ``detections.py``: SSD
  detections compared as sets;
- ``run.py``: the orchestration (``verify_loaded``: plan, judges, our back ends, comparison;
  ``VerifyOptions``), ``inputs.py``: deterministic image-like
  inputs; ``opencv5.py``: running an exported model in an OpenCV 5 interpreter.
"""

from __future__ import annotations

from .compare import Report, Tolerance
from .run import VerifyOptions, verify, verify_loaded

__all__ = ["Report", "Tolerance", "VerifyOptions", "verify", "verify_loaded"]
