"""OpenCV's high-level models (``DetectionModel``, ``ClassificationModel``) for what
``readNetFromCaffe`` returns, on OpenCV 4 and 5.

``cv2.dnn.DetectionModel(net)`` takes only a real ``cv2.dnn.Net``: OpenCV 4's own Caffe net goes
to it unchanged. A :class:`~caffe_compat.dnn.ConvertedNet` cannot (it is a wrapper), and its
``cv_net`` would not do either: OpenCV decides how to read detections from the type of the last
layer, and the ONNX conversion of Caffe's DetectionOutput is a graph of ONNX nodes, so OpenCV
answers "Unknown output layer type". Here the same steps run on the wrapper, as OpenCV 4.14's
``modules/dnn/src/model.cpp`` does them: the frame to a blob (size, mean, scale, swapRB, center
crop), one forward, then for a DetectionOutput net each row ``[image, class, confidence, x1, y1,
x2, y2]`` at or above the threshold becomes a box in pixels (corners under 2 pixels apart are
taken as fractions of the frame), clipped to the frame; for a classifier the best score of the
single output (after a softmax when enabled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import CaffeCompatError
from .net import ConvertedNet


def _net_of(model: Any, config: Any) -> Any:
    if isinstance(model, ConvertedNet):
        return model
    from .read import _cv2, readNet

    if isinstance(model, _cv2().dnn.Net):
        return model
    return readNet(model, config)


def DetectionModel(model: Any, config: Any = "") -> Any:
    """``cv2.dnn.DetectionModel(net)`` or ``(model, config)``: OpenCV's own for a real
    ``cv2.dnn.Net``, :class:`ConvertedDetectionModel` for a converted net."""
    net = _net_of(model, config)
    if isinstance(net, ConvertedNet):
        return ConvertedDetectionModel(net)
    from .read import _cv2

    return _cv2().dnn.DetectionModel(net)


def ClassificationModel(model: Any, config: Any = "") -> Any:
    """``cv2.dnn.ClassificationModel(net)`` or ``(model, config)``, as :func:`DetectionModel`."""
    net = _net_of(model, config)
    if isinstance(net, ConvertedNet):
        return ConvertedClassificationModel(net)
    from .read import _cv2

    return _cv2().dnn.ClassificationModel(net)


class ConvertedModel:
    """``cv2.dnn.Model``'s input settings and ``predict`` on a :class:`ConvertedNet`."""

    def __init__(self, net: ConvertedNet) -> None:
        self.net = net
        shape = net._input_shape()
        self._size = (shape[3], shape[2]) if len(shape) == 4 else (0, 0)
        self._mean: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
        self._scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
        self._swap_rb = False
        self._crop = False

    def setInputParams(
        self,
        scale: float = 1.0,
        size: Sequence[int] = (0, 0),
        mean: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        swapRB: bool = False,
        crop: bool = False,
    ) -> None:
        self._scale = (float(scale),) * 4
        self._size, self._mean = (int(size[0]), int(size[1])), _scalar(mean, 0.0)
        self._swap_rb, self._crop = bool(swapRB), bool(crop)

    def setInputSize(self, size: Any, height: int | None = None) -> ConvertedModel:
        """``setInputSize((width, height))`` or ``setInputSize(width, height)``."""
        self._size = (
            (int(size), int(height)) if height is not None else (int(size[0]), int(size[1]))
        )
        return self

    def setInputMean(self, mean: Sequence[float]) -> ConvertedModel:
        self._mean = _scalar(mean, 0.0)
        return self

    def setInputScale(self, scale: float | Sequence[float]) -> ConvertedModel:
        """One number, or one per channel; a lone first value applies to every channel (as
        OpenCV's broadcastRealScalar)."""
        values = _scalar([scale] if np.isscalar(scale) else scale, 0.0)  # type: ignore[list-item,arg-type]
        self._scale = (values[0],) * 4 if not any(values[1:]) else values
        return self

    def setInputCrop(self, crop: bool) -> ConvertedModel:
        self._crop = bool(crop)
        return self

    def setInputSwapRB(self, swapRB: bool) -> ConvertedModel:
        self._swap_rb = bool(swapRB)
        return self

    def setPreferableBackend(self, backendId: int) -> ConvertedModel:
        self.net.setPreferableBackend(backendId)
        return self

    def setPreferableTarget(self, targetId: int) -> ConvertedModel:
        self.net.setPreferableTarget(targetId)
        return self

    def _blob(self, frame: np.ndarray) -> np.ndarray:
        from .read import _cv2

        cv2 = _cv2()
        if self._size[0] <= 0 or self._size[1] <= 0:
            raise CaffeCompatError("Input size not specified: call setInputSize or setInputParams")
        params = cv2.dnn.Image2BlobParams()
        params.scalefactor = self._scale
        params.size = self._size
        params.mean = self._mean
        params.swapRB = self._swap_rb
        if self._crop:
            params.paddingmode = cv2.dnn.DNN_PMODE_CROP_CENTER
        return cv2.dnn.blobFromImageWithParams(frame, params)

    def predict(self, frame: np.ndarray) -> tuple[np.ndarray, ...]:
        """The net's outputs for one frame (its unconnected output layers, in order)."""
        self.net.setInput(self._blob(frame))
        outputs = self.net.forward(list(self.net.getUnconnectedOutLayersNames()))
        return tuple(outputs)


class ConvertedDetectionModel(ConvertedModel):
    """``cv2.dnn.DetectionModel`` on a converted SSD net (a DetectionOutput last layer)."""

    def setNmsAcrossClasses(self, value: bool) -> ConvertedDetectionModel:
        self._nms_across = bool(value)  # used by OpenCV for YOLO's Region layer only
        return self

    def detect(
        self, frame: np.ndarray, confThreshold: float = 0.5, nmsThreshold: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(class ids, confidences, boxes as x, y, width, height in pixels); DetectionOutput has
        applied its own NMS, so ``nmsThreshold`` is unused, as in OpenCV."""
        last = self.net.getLayerNames()[-1]
        node = self.net._edited().graph.node(last)
        if not node.param.HasField("detection_output_param"):  # OpenCV asks the layer's type
            raise CaffeCompatError(
                f'DetectionModel reads SSD outputs (a DetectionOutput last layer); layer "{last}" '
                f"is {node.type}"
            )
        rows = np.concatenate([o.reshape(-1, 7) for o in self.predict(frame)]).astype(np.float32)
        rows = rows[rows[:, 2] >= np.float32(confThreshold)]
        height, width = frame.shape[:2]
        corners = np.trunc(rows[:, 3:7]).astype(np.int64)  # C++'s float -> int conversion
        size = corners[:, 2:] - corners[:, :2] + 1
        fraction = (size[:, 0] <= 2) | (size[:, 1] <= 2)
        scaled = np.trunc(rows[:, 3:7] * np.float32([width, height, width, height]))
        corners[fraction] = scaled[fraction].astype(np.int64)
        size = corners[:, 2:] - corners[:, :2] + 1
        left = np.clip(corners[:, 0], 0, width - 1)
        top = np.clip(corners[:, 1], 0, height - 1)
        box_w = np.maximum(1, np.minimum(size[:, 0], width - left))
        box_h = np.maximum(1, np.minimum(size[:, 1], height - top))
        boxes = np.stack([left, top, box_w, box_h], axis=1).astype(np.int32)
        return rows[:, 1].astype(np.int32), rows[:, 2].copy(), boxes.reshape(-1, 4)


class ConvertedClassificationModel(ConvertedModel):
    """``cv2.dnn.ClassificationModel`` on a converted net: the best class of the one output."""

    _softmax = False

    def setEnableSoftmaxPostProcessing(self, enable: bool) -> ConvertedClassificationModel:
        self._softmax = bool(enable)
        return self

    def getEnableSoftmaxPostProcessing(self) -> bool:
        return self._softmax

    def classify(self, frame: np.ndarray) -> tuple[int, float]:
        outputs = self.predict(frame)
        if len(outputs) != 1:
            raise CaffeCompatError(
                f"ClassificationModel needs one output, the net has {len(outputs)}"
            )
        scores = outputs[0].reshape(-1).astype(np.float32)
        if self._softmax:
            exp = np.exp(scores - scores.max())
            scores = exp / exp.sum()
        best = int(scores.argmax())
        return best, float(scores[best])


def _scalar(values: Sequence[float], fill: float) -> tuple[float, ...]:
    """An OpenCV Scalar: up to four numbers, the rest ``fill``."""
    numbers = [float(v) for v in values][:4]
    return tuple(numbers + [fill] * (4 - len(numbers)))
