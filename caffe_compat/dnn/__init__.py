"""OpenCV's Caffe entry points on OpenCV 5, which removed them (and on OpenCV 4, exactly).

``from caffe_compat import dnn`` then ``net = dnn.readNetFromCaffe(prototxt, caffemodel)`` or
``dnn.readNet(model, config)``; the rest of a tutorial (``setInput``, ``forward``...) is
unchanged, and so are layer edits by Caffe name (``net.getLayer(net.getLayerId("conv1")).blobs``).
``dnn.DetectionModel(net)`` and ``dnn.ClassificationModel(net)`` take what ``readNetFromCaffe``
returns (OpenCV's own for its own net). Every other name is ``cv2.dnn``'s
(``dnn.blobFromImage``, ``dnn.DNN_TARGET_CPU``...), so this module also replaces
``from cv2 import dnn``. OpenCV is imported on first use.
"""

from __future__ import annotations

from typing import Any

from .models import ClassificationModel, DetectionModel
from .net import ConvertedLayer, ConvertedNet
from .read import OpenCvRejectedError, opencv_deviations, readNet, readNetFromCaffe

__all__ = [
    "ClassificationModel",
    "ConvertedLayer",
    "ConvertedNet",
    "DetectionModel",
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
