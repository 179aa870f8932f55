"""Shared by the caffe_compat.dnn tests (tests/dnn): constants, writing nets, the SSD judge's
first half."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from caffe_compat.io import write_caffemodel
from caffe_compat.io.writer import definitions_only
from caffe_compat.ir.load import load_net

# The Levi-Hassner tutorials' BGR mean (the authors' demo and OpenCV's age-gender sample).
LH_MEAN = (78.4263377603, 87.7689143744, 114.895847746)
RES10 = Path(__file__).resolve().parent / "converters" / "data" / "ssd_res10_300x300.prototxt"
OPENCV4 = hasattr(cv2.dnn, "readNetFromCaffe")
# In the OpenCV 4 environment the ONNX path is forced too, so it is compared with OpenCV's reader.
CONVERT_MODES = [None, True] if OPENCV4 else [None]


def write_net(folder: Path, prototxt: Path | str, blobs: dict[str, list[np.ndarray]]) -> Path:
    """The blobs as a V2 binary caffemodel for the net of ``prototxt``."""
    loaded = load_net(prototxt)
    path = folder / f"{Path(prototxt).stem}.caffemodel"
    write_caffemodel(path, definitions_only(loaded.net.layer), blobs)
    return path


def ssd_heads(prototxt: Path, caffemodel: Path, x: np.ndarray, values: list[str]) -> list:
    """Values of the SSD net from onnx's reference evaluator on our ONNX export, up to ``values``
    (the trunk only: the evaluator's GatherElements cannot run our DetectionOutput graph)."""
    import onnx.utils
    from onnx.reference import ReferenceEvaluator

    from caffe_compat.converters.onnx.export import to_onnx

    graph = load_net(prototxt, caffemodel).graph
    model = onnx.utils.Extractor(to_onnx(graph, extra_outputs=values)).extract_model(
        list(graph.inputs), values
    )
    return ReferenceEvaluator(model).run(values, {"data": x})
