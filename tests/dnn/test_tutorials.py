"""The OpenCV tutorials' own code, with ``cv2.dnn.readNetFromCaffe`` replaced by
``caffe_compat.dnn.readNetFromCaffe``, on OpenCV 4 and OpenCV 5.

Judges: OpenCV 4's own Caffe reader where it exists (OpenCV 4 environment; there the ONNX path is
also forced with ``convert=True`` so that it is compared, not just handed over), and in every
environment an implementation that shares nothing with the code under test:
- age net: Caffe's formulas in numpy float64 (tests/_numpy_nets.py) on the same weights;
- res10 detector: onnx's reference evaluator computes the three DetectionOutput bottoms from our
  ONNX export (a second runtime, independent of OpenCV) and numpy's DetectionOutput (decode, greedy
  NMS, keep_top_k) turns them into detections. That judges OpenCV 5 running our ONNX; whether the
  export computes Caffe's function is judged against OpenCV 4 in the other environment.
Tolerances: prob within 1e-4 (the tutorial bar); other blobs within 1e-4 of their largest value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _dnn_files import CONVERT_MODES, LH_MEAN, OPENCV4, cv2, ssd_heads
from _numpy_nets import canonical, detection_output, levi_hassner

from caffe_compat import dnn


def _close(ours: np.ndarray, reference: np.ndarray, what: str) -> None:
    assert ours.shape == reference.shape, what
    scale = max(float(np.abs(reference).max()), 1.0)
    assert float(np.abs(ours - reference).max()) <= 1e-4 * scale, what


@pytest.mark.parametrize("convert", CONVERT_MODES)
def test_age_tutorial(age_files, face, convert):
    prototxt, caffemodel, blobs = age_files
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=convert)
    converted = convert or not OPENCV4
    assert isinstance(net, dnn.ConvertedNet) == converted
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    blob = cv2.dnn.blobFromImage(face, 1.0, (227, 227), LH_MEAN, swapRB=False)
    net.setInput(blob)
    prob = net.forward()
    judge = levi_hassner(blobs, blob)
    assert prob.shape == (1, 8)
    assert float(np.abs(prob - judge["prob"]).max()) <= 1e-4
    assert prob.argmax() == judge["prob"].argmax()
    assert 0.2 < float(prob.max()) < 0.95  # the scores vary: the comparison is not of one-hots

    pool5 = net.forward("pool5")
    _close(pool5, judge["pool5"], "pool5")
    fc8, prob2 = net.forward(["fc8", "prob"])
    _close(fc8, judge["fc8"], "fc8")
    np.testing.assert_array_equal(prob2, prob)
    net.setInput(blob, "data")  # the named form
    _close(net.forward("fc7"), judge["fc7@fc7"], "fc7: the layer's output, before relu7")
    _close(net.forward("drop7"), judge["fc7"], "drop7: the blob fc7 after relu7 and drop7")

    if OPENCV4:
        theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        theirs.setInput(blob)
        assert float(np.abs(prob - theirs.forward()).max()) <= 1e-4
        _close(pool5, theirs.forward("pool5"), "pool5 vs OpenCV 4")
        assert net.getLayerNames() == theirs.getLayerNames()
        assert list(net.getUnconnectedOutLayers()) == list(theirs.getUnconnectedOutLayers())
        assert net.getUnconnectedOutLayersNames() == theirs.getUnconnectedOutLayersNames()
        # OpenCV 4 answers a layer name with that layer's own output, before in-place layers.
        for name in ("conv1", "relu1", "fc6", "drop6"):
            _close(net.forward(name), theirs.forward(name), f"{name} vs OpenCV 4")
    else:
        assert net.getLayerNames()[:3] == ("conv1", "relu1", "pool1")
        assert net.getUnconnectedOutLayersNames() == ("prob",)
        _close(net.forward("conv1"), judge["conv1@conv1"], "conv1 (before relu1)")
        _close(net.forward("relu1"), judge["conv1"], "relu1")


@pytest.mark.parametrize("convert", CONVERT_MODES)
def test_age_batch_of_two_faces(age_files, face, convert):
    prototxt, caffemodel, blobs = age_files
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=convert)
    faces = [face, np.ascontiguousarray(face[:, ::-1])]
    blob = cv2.dnn.blobFromImages(faces, 1.0, (227, 227), LH_MEAN, swapRB=False)
    net.setInput(blob)
    prob = net.forward()
    assert prob.shape == (2, 8)
    assert float(np.abs(prob - levi_hassner(blobs, blob)["prob"]).max()) <= 1e-4


HEADS = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]


def _rows(detections: np.ndarray) -> np.ndarray:
    """Canonically sorted detections without the all-zero rows OpenCV 4's own reader pads its
    output with (it returns keep_top_k rows; Caffe and the conversion return the real ones)."""
    rows = detections.reshape(-1, 7)
    return canonical(rows[np.any(rows != 0, axis=1)])


def test_face_detection_tutorial(res10_files):
    prototxt, caffemodel, blob = res10_files
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setInput(blob)
    detections = net.forward()
    assert detections.ndim == 4 and detections.shape[:2] == (1, 1) and detections.shape[3] == 7

    heads = ssd_heads(prototxt, caffemodel, blob, HEADS)
    judge = detection_output(
        *heads,
        num_classes=2,
        background=0,
        nms=0.45,
        top_k=400,
        keep_top_k=200,
        threshold=0.01,
    )
    # Non-trivial: many boxes and a spread of scores.
    assert 20 <= len(judge) <= 200 and judge[:, 2].min() < 0.1 < 0.6 < judge[:, 2].max()
    ours, expected = _rows(detections), canonical(judge)
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(ours[:, :2], expected[:, :2])
    np.testing.assert_allclose(ours[:, 2:], expected[:, 2:], rtol=0, atol=1e-4)
    # The tutorial's loop: confidence in column 2, box corners in 3..6 scaled by the image size.
    confident = detections[0, 0, detections[0, 0, :, 2] > 0.5]
    assert len(confident) == int((judge[:, 2] > 0.5).sum())

    for ours_head, head, name in zip(net.forward(HEADS), heads, HEADS):
        _close(ours_head, head, name)

    if OPENCV4:
        theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        theirs.setInput(blob)
        reference = _rows(theirs.forward())
        assert ours.shape == reference.shape
        np.testing.assert_array_equal(ours[:, :2], reference[:, :2])
        np.testing.assert_allclose(ours[:, 2:], reference[:, 2:], rtol=0, atol=1e-4)


@pytest.mark.skipif(not OPENCV4, reason="OpenCV 4 only: OpenCV 5 always runs the conversion")
def test_detector_conversion_on_opencv4(res10_files):
    """OpenCV 4.14's ONNX importer cannot parse the in-graph DetectionOutput (a Squeeze of a
    shape); then the forced conversion says so in one line (the automatic path hands the files
    to OpenCV's Caffe reader, and falls back to it with a warning for nets it deviates on)."""
    prototxt, caffemodel, blob = res10_files
    try:
        net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=True)
    except dnn.OpenCvRejectedError as exc:
        assert "cannot load the ONNX conversion" in str(exc) and "\n" not in str(exc)
        assert "detection_out" in str(exc)
        return
    theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setInput(blob)
    theirs.setInput(blob)
    ours, reference = _rows(net.forward()), _rows(theirs.forward())
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)


def test_face_detector_sample(res10_files, astronaut):
    """OpenCV's samples/dnn/resnet_ssd_face_python.py, one frame: readNetFromCaffe, the frame
    resized to 300 x 300, getPerfProfile, the confidence > 0.5 loop scaling corners to pixels."""
    prototxt, caffemodel, _ = res10_files
    in_width, in_height, conf_threshold = 300, 300, 0.5
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    frame = np.ascontiguousarray(astronaut[:, 40:])
    cols, rows = frame.shape[1], frame.shape[0]
    blob = dnn.blobFromImage(
        cv2.resize(frame, (in_width, in_height)), 1.0, (in_width, in_height), (104.0, 177.0, 123.0)
    )
    net.setInput(blob)
    detections = net.forward()
    perf_stats = net.getPerfProfile()
    assert perf_stats[0] / cv2.getTickFrequency() * 1000 > 0
    boxes = []
    for i in range(detections.shape[2]):
        confidence = detections[0, 0, i, 2]
        if confidence > conf_threshold:
            x_left_bottom = int(detections[0, 0, i, 3] * cols)
            y_left_bottom = int(detections[0, 0, i, 4] * rows)
            x_right_top = int(detections[0, 0, i, 5] * cols)
            y_right_top = int(detections[0, 0, i, 6] * rows)
            boxes.append((confidence, x_left_bottom, y_left_bottom, x_right_top, y_right_top))
    assert 1 <= len(boxes) <= 20  # a handful, as with trained weights
    heads = ssd_heads(prototxt, caffemodel, blob, HEADS)
    judge = detection_output(
        *heads, num_classes=2, background=0, nms=0.45, top_k=400, keep_top_k=200, threshold=0.01
    )
    kept = judge[judge[:, 2] > conf_threshold]
    assert len(boxes) == len(kept)
    np.testing.assert_allclose(sorted(b[0] for b in boxes), np.sort(kept[:, 2]), atol=1e-4)
    if OPENCV4:
        theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        theirs.setInput(blob)
        reference = theirs.forward()
        assert int((reference[0, 0, :, 2] > conf_threshold).sum()) == len(boxes)


@pytest.mark.slow
@pytest.mark.parametrize("convert", CONVERT_MODES)
def test_googlenet_sample(tmp_path, astronaut, convert):
    """OpenCV's samples/dnn/googlenet_python.py: blobFromImage(img, 1, (224, 224), (104, 117,
    123), False), readNetFromCaffe, forward, the best class, with synthesized (calibrated)
    weights; judged by the float64 reference and, on OpenCV 4, OpenCV's own reader."""
    from _dnn_files import write_net

    import caffe_compat.zoo
    from caffe_compat.ir.load import load_net
    from caffe_compat.reference import forward as reference_forward
    from caffe_compat.tools.synth import synthesize

    prototxt = Path(caffe_compat.zoo.__file__).parent / "bvlc_googlenet.prototxt"
    loaded = load_net(prototxt)
    blobs = synthesize(loaded, seed=6, progress=False)
    caffemodel = write_net(tmp_path, prototxt, blobs)

    blob = dnn.blobFromImage(astronaut, 1, (224, 224), (104, 117, 123), False)
    net = dnn.readNetFromCaffe(str(prototxt), str(caffemodel), convert=convert)
    net.setInput(blob)
    prob = net.forward()
    assert prob.shape == (1, 1000)
    judge = reference_forward(loaded, {"data": blob}, ["prob"])["prob"]
    assert float(np.abs(prob - judge).max()) <= 1e-4
    assert int(prob.argmax()) == int(judge.argmax())
    assert float(prob.max()) < 0.99  # not saturated: the best class is not a foregone one
    if OPENCV4:
        theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        theirs.setInput(blob)
        assert float(np.abs(prob - theirs.forward()).max()) <= 1e-4
