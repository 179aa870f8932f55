"""predict: faces found in a real photo, the two back ends agreeing face by face, the crop modes,
batching across photos, model sources, and the SSD detector path.

Models are SYNTHESIZED weights in the official Levi-Hassner shapes (never the released ones), so
the labels they give mean nothing; what is checked is where faces are, that every route computes
the same numbers, and that those numbers are the ones an independent numpy pipeline gives."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _harness import judge_run
from _models import ZOO, synth_models

from caffe_compat.app import faces as face_module
from caffe_compat.app.faces import (
    DEFAULT_MARGIN,
    SSDDetector,
    expand_box,
    parse_ssd_output,
)
from caffe_compat.app.images import read_image, sniff_image
from caffe_compat.app.predictor import FacePrediction, Predictor, predict
from caffe_compat.converters.onnx.export import save_onnx, to_onnx
from caffe_compat.converters.torch.model import to_torch
from caffe_compat.errors import CaffeCompatError
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.zoo import load_card

cv2 = pytest.importorskip("cv2")


AGE_MEAN = (78.4263377603, 87.7689143744, 114.895847746)  # FACTS.md, B, G, R


# The astronaut's face in skimage.data.astronaut() (512 x 512), read off the image by eye: the
# centre of the face is near (225, 112) and it is roughly 80-110 pixels wide.
FACE_CENTRE = (225, 112)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return synth_models(tmp_path_factory)


@pytest.fixture(scope="module")
def torch_predictor(models):
    return Predictor(
        age_model=(models["age"]["prototxt"], models["age"]["weights"]),
        gender_model=(models["gender"]["prototxt"], models["gender"]["weights"]),
    )


@pytest.fixture(scope="module")
def onnx_predictor(models):
    return Predictor(age_model=models["age"]["onnx"], gender_model=models["gender"]["onnx"])


def test_flat_gray_image_has_no_face(torch_predictor):
    gray = np.full((240, 320, 3), 128, np.uint8)
    assert face_module.HaarDetector()(gray) == []
    assert torch_predictor.predict(gray) == []


def test_expand_box_adds_the_margin_and_clamps():
    # 40 % of 100 on each side, fully inside a 1000 x 1000 photo
    assert expand_box((400, 300, 100, 100), 0.4, 1000, 1000) == (360, 260, 180, 180)
    # near the top-left corner: clamped at 0, the far sides still grow by 40
    assert expand_box((10, 20, 100, 50), 0.4, 1000, 1000) == (0, 0, 150, 90)
    # near the bottom-right corner
    assert expand_box((950, 960, 50, 40), 0.4, 1000, 1000) == (930, 944, 70, 56)
    assert DEFAULT_MARGIN == 0.4
    with pytest.raises(CaffeCompatError):
        expand_box((0, 0, 10, 10), -0.1, 100, 100)


def test_predictions_carry_box_crop_box_and_settings(torch_predictor, astronaut):
    (face,) = torch_predictor.predict(astronaut)
    assert isinstance(face, FacePrediction)
    detected = face_module.HaarDetector()(astronaut)[0].box
    assert face.box == detected
    assert face.crop_box == expand_box(detected, 0.4, 512, 512)
    assert (face.crop, face.backend, face.path, face.face) == ("oversample", "torch", None, 1)
    assert face.age in load_card(ZOO["age"]).labels and face.gender in ("Male", "Female")


# --------------------------------------------------------------------------------------------
# The numbers


def _numpy_oversample(image: np.ndarray, mean) -> np.ndarray:
    """Caffe's oversample written out here: 256x256 bilinear, five 227 crops + mirrors, minus the
    per-channel mean."""
    big = cv2.resize(image.astype(np.float32), (256, 256), interpolation=cv2.INTER_LINEAR)
    chw = big.transpose(2, 0, 1) - np.asarray(mean, np.float32)[:, None, None]
    crops = [chw[:, y : y + 227, x : x + 227] for y, x in ((0, 0), (0, 29), (29, 0), (29, 29))]
    crops.append(chw[:, 14 : 14 + 227, 14 : 14 + 227])
    crops += [c[:, :, ::-1] for c in crops]
    return np.ascontiguousarray(np.stack(crops), dtype=np.float32)


def test_oversample_is_the_mean_of_ten_crops_of_the_margin_crop(models, torch_predictor, astronaut):
    import torch

    (face,) = torch_predictor.predict(astronaut)
    x, y, w, h = face.crop_box
    batch = _numpy_oversample(astronaut[y : y + h, x : x + w], AGE_MEAN)
    model = to_torch(load_net(models["age"]["prototxt"], models["age"]["weights"]).graph)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy().mean(axis=0)
    np.testing.assert_allclose(face.age_probs, expected, rtol=0, atol=1e-6)
    ranked = np.argsort(-expected)
    labels = load_card(ZOO["age"]).labels
    assert [label for label, _ in face.age_top2] == [labels[ranked[0]], labels[ranked[1]]]


def _two_face_photo(astronaut: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1))


@pytest.mark.slow  # whole-net work; the fast tier must fit 6 minutes on 2 cores
def test_torch_and_onnx_agree_on_every_face(torch_predictor, onnx_predictor, astronaut, models):
    converted = Predictor(
        backend="onnx",
        age_model=(models["age"]["prototxt"], models["age"]["weights"]),
        gender_model=(models["gender"]["prototxt"], models["gender"]["weights"]),
    )
    photos = [astronaut, _two_face_photo(astronaut)]
    worst = 0.0
    for photo in photos:
        reference = torch_predictor.predict(photo)
        assert len(reference) == (1 if photo is astronaut else 2)
        for other in (onnx_predictor, converted):
            faces = other.predict(photo)
            assert [f.box for f in faces] == [f.box for f in reference]
            for a, b in zip(reference, faces):
                assert (a.age, a.gender) == (b.age, b.gender)
                assert b.backend == "onnx" and a.backend == "torch"
                diff = max(
                    np.abs(np.subtract(a.age_probs, b.age_probs)).max(),
                    np.abs(np.subtract(a.gender_probs, b.gender_probs)).max(),
                )
                worst = max(worst, float(diff))
    assert worst <= 1e-4, worst
    print(f"torch vs onnx: max probability difference {worst:.2e}")


@pytest.mark.parametrize("crop", ["oversample", "center", "opencv"])
def test_every_crop_mode_gives_probabilities(onnx_predictor, astronaut, crop, models):
    predictor = Predictor(
        crop=crop, age_model=models["age"]["onnx"], gender_model=models["gender"]["onnx"]
    )
    (face,) = predictor.predict(astronaut)
    assert face.crop == crop
    for probs, count in ((face.age_probs, 8), (face.gender_probs, 2)):
        assert len(probs) == count
        assert min(probs) >= 0.0
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-5)
    assert face.age_prob == max(face.age_probs) and face.gender_prob == max(face.gender_probs)
    assert face.age_top2[0][1] >= face.age_top2[1][1]


def test_center_and_opencv_modes_match_numpy(models, astronaut):
    import torch

    predictor = Predictor(models=("age",), age_model=models["age"]["onnx"], crop="center")
    (face,) = predictor.predict(astronaut)
    x, y, w, h = face.crop_box
    crop = astronaut[y : y + h, x : x + w]
    big = cv2.resize(crop.astype(np.float32), (256, 256), interpolation=cv2.INTER_LINEAR)
    center = big[14 : 14 + 227, 14 : 14 + 227] - np.float32(AGE_MEAN)
    blob = cv2.dnn.blobFromImage(crop, 1.0, (227, 227), AGE_MEAN, swapRB=False)
    model = to_torch(load_net(models["age"]["prototxt"], models["age"]["weights"]).graph)
    with torch.no_grad():
        expected_center = model(torch.from_numpy(center.transpose(2, 0, 1)[None].copy())).numpy()
        expected_cv = model(torch.from_numpy(blob)).numpy()
    np.testing.assert_allclose(face.age_probs, expected_center[0], atol=1e-5)
    (face_cv,) = Predictor(models=("age",), age_model=models["age"]["onnx"], crop="opencv").predict(
        astronaut
    )
    np.testing.assert_allclose(face_cv.age_probs, expected_cv[0], atol=1e-5)


def test_batching_across_photos_keeps_results_and_order(models, astronaut):
    photos = [astronaut, np.full((100, 100, 3), 90, np.uint8), _two_face_photo(astronaut)]
    results = {}
    for batch in (1, 2, 16):
        predictor = Predictor(models="age", batch=batch, age_model=models["age"]["onnx"])
        results[batch] = list(predictor.predict_many(enumerate(photos)))
    keys = [[key for key, _ in results[b]] for b in results]
    assert keys == [[0, 1, 2]] * 3
    counts = [len(faces) for _, faces in results[16]]
    assert counts == [1, 0, 2]
    for batch in (1, 2):
        for (_, faces), (_, reference) in zip(results[batch], results[16]):
            assert [f.box for f in faces] == [f.box for f in reference]
            for a, b in zip(faces, reference):
                np.testing.assert_allclose(a.age_probs, b.age_probs, atol=1e-6)
    # the faces belong to the right photo: the pair's second face sits where the mirror image of
    # the single photo's face is (Haar is not mirror-symmetric: centres within 10 pixels)
    (single,), pair = results[16][0][1], results[16][2][1]
    x, y, w, h = single.box
    mirrored = (1024 - (x + w / 2), y + h / 2)
    centres = [(f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2) for f in pair]
    assert any(abs(cx - mirrored[0]) <= 10 and abs(cy - mirrored[1]) <= 10 for cx, cy in centres)


def test_no_detect_uses_the_whole_photo(onnx_predictor, astronaut):
    (face,) = onnx_predictor.predict(np.full((50, 70, 3), 128, np.uint8), no_detect=True)
    assert face.box == face.crop_box == (0, 0, 70, 50)
    assert face.detection_score is None


def test_predict_from_a_file_and_the_package_function(models, astronaut, tmp_path):
    import caffe_compat

    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), astronaut)
    options = {"age_model": models["age"]["onnx"], "gender_model": models["gender"]["onnx"]}
    (face,) = predict(path, **options)
    assert face.path == str(path)
    (again,) = caffe_compat.predict(str(path), **options)  # a plain function of the package
    assert again.age_probs == face.age_probs
    assert caffe_compat.predict is predict
    (lazy,) = caffe_compat.predict(astronaut, **options)
    assert lazy.box == face.box and lazy.path is None
    assert json.loads(json.dumps(face.to_dict()))["box"] == list(face.box)


def test_labels_come_from_card_metadata_or_override(models, astronaut, tmp_path):
    graph = load_net(models["gender"]["prototxt"], models["gender"]["weights"]).graph
    custom = tmp_path / "gender_labels.onnx"
    save_onnx(to_onnx(graph, metadata={"labels": json.dumps(["man", "woman"])}), custom)
    predictor = Predictor(models=("gender",), gender_model=str(custom))
    assert predictor.labels == {"gender": ("man", "woman")}
    (face,) = predictor.predict(astronaut)
    assert face.gender in ("man", "woman") and face.age is None and face.age_probs == ()
    override = Predictor(models="gender", gender_model=str(custom), gender_labels=("M", "F"))
    assert override.labels["gender"] == ("M", "F")
    with pytest.raises(CaffeCompatError, match="2 outputs per face but has 3 labels"):
        Predictor(models="gender", gender_model=str(custom), gender_labels=("a", "b", "c"))


def test_released_v1_deploy_files_work(shared, models, astronaut):
    """The authors' V1 deploy_gender.prototxt (input_dim 10) takes the synthesized weights."""
    predictor = Predictor(
        models="gender",
        gender_model=(shared / "deploy_gender.prototxt", models["gender"]["weights"]),
    )
    reference = Predictor(models="gender", gender_model=models["gender"]["onnx"])
    (a,), (b,) = predictor.predict(astronaut), reference.predict(astronaut)
    np.testing.assert_allclose(a.gender_probs, b.gender_probs, atol=1e-5)


def test_bad_model_arguments(models, tmp_path):
    with pytest.raises(CaffeCompatError, match="onnx back end"):
        Predictor(backend="torch", models="age", age_model=models["age"]["onnx"])
    with pytest.raises(CaffeCompatError, match="models are age"):
        Predictor(models="height")
    with pytest.raises(CaffeCompatError, match="crop mode"):
        Predictor(models="age", age_model=models["age"]["onnx"], crop="tencrop")
    with pytest.raises(CaffeCompatError, match="not in the cache"):
        Predictor(models="age", cache_dir=tmp_path / "empty")


def test_images_are_judged_by_content(astronaut, tmp_path):
    disguised = tmp_path / "photo.txt"
    disguised.write_bytes(cv2.imencode(".png", astronaut)[1].tobytes())
    assert read_image(disguised).shape == (512, 512, 3)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(CaffeCompatError, match="not an image"):
        read_image(text)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(cv2.imencode(".jpg", astronaut)[1].tobytes()[:4000])
    with pytest.raises(CaffeCompatError, match="corrupt"):
        read_image(broken)
    assert sniff_image(b"\xff\xd8\xff\xe0") == "JPEG" and sniff_image(b"RIFF\0\0\0\0WEBPVP8 ")
    assert sniff_image(b"P6\n3 2\n255\n") and sniff_image(b"hello") is None


# --------------------------------------------------------------------------------------------
# SSD detector


def test_parse_ssd_output_thresholds_clamps_and_sorts():
    rows = np.array(
        [
            [0, 1, 0.30, 0.1, 0.1, 0.2, 0.2],  # below the threshold
            [0, 1, 0.90, 0.25, 0.50, 0.75, 1.20],  # bottom past the photo: clamped
            [0, 1, 0.95, -0.1, 0.0, 0.5, 0.5],  # left past the photo: clamped
            [-1, -1, -1, -1, -1, -1, -1],  # Caffe's filler row
        ],
        np.float32,
    )[None, None]
    found = parse_ssd_output(rows, width=200, height=100, confidence=0.5)
    assert [d.box for d in found] == [(0, 0, 100, 50), (50, 50, 100, 50)]
    assert [round(d.score, 2) for d in found] == [0.95, 0.90]


def _constant_detector(path, rows: np.ndarray) -> None:
    """An ONNX model 1x3x300x300 -> the given rows (1x1xNx7), whatever the input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["data"], ["m"], keepdims=1),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["rows", "z"], ["detection_out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_ssd",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 300, 300])],
        [helper.make_tensor_value_info("detection_out", TensorProto.FLOAT, list(rows.shape))],
        initializer=[
            numpy_helper.from_array(rows.astype(np.float32), "rows"),
            numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))


def test_ssd_detector_from_onnx_drives_the_predictor(models, astronaut, tmp_path):
    rows = np.array([[0, 1, 0.97, 0.30, 0.10, 0.55, 0.35], [0, 1, 0.2, 0, 0, 1, 1]], np.float32)[
        None, None
    ]
    path = tmp_path / "ssd.onnx"
    _constant_detector(path, rows)
    detector = SSDDetector(path, confidence=0.5)
    assert (detector.height, detector.width) == (300, 300)
    (found,) = detector(astronaut)
    assert found.box == (154, 51, 128, 128) and abs(found.score - 0.97) < 1e-6
    predictor = Predictor(
        backend="torch",  # the detector's .onnx still runs on ONNX Runtime
        age_model=(models["age"]["prototxt"], models["age"]["weights"]),
        gender_model=(models["gender"]["prototxt"], models["gender"]["weights"]),
        detector=str(path),
    )
    (face,) = predictor.predict(astronaut)
    assert face.box == (154, 51, 128, 128) and abs(face.detection_score - 0.97) < 1e-6
    assert face.crop_box == expand_box(face.box, 0.4, 512, 512)


TINY_SSD = """
name: "tiny_ssd"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 300 dim: 300 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 stride: 4 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 8 kernel_size: 3 stride: 5 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "loc" type: "Convolution" bottom: "conv2" top: "loc" convolution_param { num_output: 12 kernel_size: 3 pad: 1 } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" flatten_param { axis: 1 } }
layer { name: "conf" type: "Convolution" bottom: "conv2" top: "conf" convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" flatten_param { axis: 1 } }
layer { name: "conf_reshape" type: "Reshape" bottom: "conf_flat" top: "conf_reshape" reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax" softmax_param { axis: 2 } }
layer { name: "conf_out" type: "Flatten" bottom: "conf_softmax" top: "conf_out" flatten_param { axis: 1 } }
layer { name: "priors" type: "PriorBox" bottom: "conv2" bottom: "data" top: "priors" prior_box_param { min_size: 60 max_size: 150 aspect_ratio: 2 flip: false clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 20 offset: 0.5 } }
layer { name: "detection_out" type: "DetectionOutput" bottom: "loc_flat" bottom: "conf_out" bottom: "priors" top: "detection_out" include { phase: TEST } detection_output_param { num_classes: 2 share_location: true background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 100 } code_type: CENTER_SIZE keep_top_k: 20 confidence_threshold: 0.01 } }
"""


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_converted_ssd_detector_matches_the_judge(backend, judge, astronaut, tmp_path):
    prototxt = tmp_path / "ssd.prototxt"
    prototxt.write_text(TINY_SSD)
    loaded = load_net(prototxt)
    blobs = synthesize(loaded, seed=5, method="he")
    for name in ("loc", "conf"):  # unsaturated scores, so thresholds and order are not ties
        blobs[name] = [b * 0.02 for b in blobs[name]]
    weights = tmp_path / "ssd.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
    blob = cv2.dnn.blobFromImage(astronaut, 1.0, (300, 300), (104, 177, 123))
    loaded = load_net(prototxt, weights)
    (out,) = loaded.graph.outputs
    rows = judge_run(loaded, prototxt, weights, {"data": blob}, [out])[out]
    expected = parse_ssd_output(rows, 512, 512, confidence=0.3)
    assert expected, "the synthesized detector should find something to compare"
    found = SSDDetector(prototxt, weights, confidence=0.3, backend=backend)(astronaut)
    assert len(found) == len(expected)
    for d in expected:
        match = min(found, key=lambda f: max(abs(a - b) for a, b in zip(f.box, d.box)))
        assert max(abs(a - b) for a, b in zip(match.box, d.box)) <= 1
        assert abs(match.score - d.score) <= 1e-4
