"""OpenCV's Caffe entry points on OpenCV 5, which removed them (and on OpenCV 4, exactly).

``from caffe_compat import dnn`` then ``net = dnn.readNetFromCaffe(prototxt, caffemodel)`` or
``dnn.readNet(model, config)``; the rest of a tutorial (``setInput``, ``forward``...) is
unchanged. Every other name is ``cv2.dnn``'s (``dnn.blobFromImage``, ``dnn.DNN_TARGET_CPU``...),
so this module also replaces ``from cv2 import dnn``. OpenCV is imported on first use.
"""

from __future__ import annotations

from typing import Any

from .net import ConvertedNet
from .read import OpenCvRejectedError, opencv_deviations, readNet, readNetFromCaffe

__all__ = [
    "ConvertedNet",
    "OpenCvRejectedError",
    "opencv_deviations",
    "readNet",
    "readNetFromCaffe",
]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    import cv2

    return getattr(cv2.dnn, name)
