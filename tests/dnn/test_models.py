"""dnn.DetectionModel / dnn.ClassificationModel on what readNetFromCaffe returns.

Judge: OpenCV 4's own ``cv2.dnn.DetectionModel`` / ``ClassificationModel`` on OpenCV 4's own Caffe
net (OpenCV 4 environment). For the detector, whose conversion OpenCV 4.14's ONNX importer cannot
load, the wrapper is given OpenCV 4's Caffe net as its inner net: the same numbers in, so the
post-processing (thresholds, fractions to pixels, clipping) is judged alone against OpenCV's C++.
In the OpenCV 5 environment the converted detector's detections are judged against numpy's
DetectionOutput on the ONNX reference evaluator's heads (tests/_numpy_nets.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from _dnn_files import LH_MEAN, OPENCV4, cv2, ssd_heads
from _numpy_nets import detection_output

from caffe_compat import dnn
from caffe_compat.dnn.models import ConvertedDetectionModel
from caffe_compat.dnn.names import NetNames
from caffe_compat.dnn.net import ConvertedNet
from caffe_compat.errors import CaffeCompatError
from caffe_compat.ir.load import load_net

HEADS = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]


def _detector(model) -> None:
    model.setInputParams(1.0, (300, 300), (104.0, 177.0, 123.0), False, False)


@pytest.mark.skipif(not OPENCV4, reason="OpenCV 4's DetectionModel is the judge")
def test_detection_model_matches_opencv4(res10_files, astronaut):
    prototxt, caffemodel, _ = res10_files
    native = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    theirs = cv2.dnn.DetectionModel(native)
    _detector(theirs)
    inner = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    loaded = load_net(prototxt, caffemodel)
    wrapped = ConvertedNet(inner, NetNames.from_graph(loaded.graph), None, editable=lambda: loaded)
    ours = dnn.DetectionModel(wrapped)
    assert isinstance(ours, ConvertedDetectionModel)
    _detector(ours)
    frame = np.ascontiguousarray(astronaut[:400, 50:])  # not square: x and y scale apart
    for threshold in (0.01, 0.3, 0.5):
        want = theirs.detect(frame, confThreshold=threshold)
        got = ours.detect(frame, confThreshold=threshold)
        assert len(want[0]) > 0
        np.testing.assert_array_equal(np.asarray(got[0]).ravel(), np.asarray(want[0]).ravel())
        np.testing.assert_allclose(got[1].ravel(), np.asarray(want[1]).ravel(), atol=1e-6)
        np.testing.assert_array_equal(got[2], np.asarray(want[2]).reshape(-1, 4))
    assert isinstance(dnn.DetectionModel(native), cv2.dnn.DetectionModel)  # OpenCV's own


@pytest.mark.skipif(OPENCV4, reason="OpenCV 4 cannot load the converted detector")
def test_detection_model_on_the_converted_detector(res10_files, astronaut):
    prototxt, caffemodel, _ = res10_files
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    model = dnn.DetectionModel(net)
    _detector(model)
    class_ids, confidences, boxes = model.detect(astronaut, confThreshold=0.3)
    blob = cv2.dnn.blobFromImage(astronaut, 1.0, (300, 300), (104.0, 177.0, 123.0))
    heads = ssd_heads(prototxt, caffemodel, blob, HEADS)
    judge = detection_output(
        *heads, num_classes=2, background=0, nms=0.45, top_k=400, keep_top_k=200, threshold=0.01
    )
    kept = judge[judge[:, 2] >= 0.3]
    assert len(kept) > 0
    np.testing.assert_allclose(np.sort(confidences), np.sort(kept[:, 2]), atol=1e-4)
    assert set(class_ids.tolist()) == {1}
    h, w = astronaut.shape[:2]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= w).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= h).all()


def test_classification_model(age_files, face):
    prototxt, caffemodel, _ = age_files
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True if OPENCV4 else None)
    model = dnn.ClassificationModel(net)
    model.setInputParams(1.0, (227, 227), LH_MEAN, False, False)
    blob = cv2.dnn.blobFromImage(face, 1.0, (227, 227), LH_MEAN, swapRB=False)
    net.setInput(blob)
    prob = net.forward().ravel()
    class_id, confidence = model.classify(face)
    assert class_id == int(prob.argmax()) and abs(confidence - float(prob.max())) <= 1e-5
    model.setEnableSoftmaxPostProcessing(True)
    soft = np.exp(prob - prob.max()) / np.exp(prob - prob.max()).sum()
    assert model.classify(face)[1] == pytest.approx(float(soft.max()), abs=1e-5)
    if OPENCV4:
        theirs = cv2.dnn.ClassificationModel(
            cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        )
        theirs.setInputParams(1.0, (227, 227), LH_MEAN, False, False)
        want_id, want_conf = theirs.classify(face)
        assert class_id == want_id and abs(confidence - want_conf) <= 1e-4


def test_a_classifier_is_no_detector(age_files):
    prototxt, caffemodel, _ = age_files
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True if OPENCV4 else None)
    model = dnn.DetectionModel(net)
    with pytest.raises(CaffeCompatError) as caught:
        model.detect(np.zeros((50, 60, 3), np.uint8))
    assert 'layer "prob" is Softmax' in str(caught.value)
