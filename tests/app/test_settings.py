"""The application's one settings object: checked when built, frozen, the same values whether a
Predictor is given it or the old keywords, and the limits and locate/resize steps every route
shares. Synthesized nets (ONNX)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _album import onnx_options

from caffe_compat.app.faces import Detection, expand_box, locate
from caffe_compat.app.predictor import Predictor, TaskNet
from caffe_compat.app.preprocess import first_resize, first_resize_shape, preprocess
from caffe_compat.app.settings import DEFAULT_BATCH, AppSettings, parse_models
from caffe_compat.errors import CaffeCompatError

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "tensorflow"}, "backend must be one of torch, onnx, not 'tensorflow'"),
        ({"batch": 0}, "batch must be at least 1, got 0"),
        ({"batch": True}, "batch must be at least 1"),
        ({"max_pixels": -5}, "max_pixels must be at least 1, got -5"),
        ({"max_bytes": 0}, "max_bytes must be at least 1, got 0"),
        ({"threads": 0}, "threads must be at least 1, got 0"),
        ({"margin": -0.1}, "margin must be 0 or more, got -0.1"),
        ({"margin": float("nan")}, "margin must be 0 or more, got nan"),
        ({"crop": "tencrop"}, "unknown crop mode 'tencrop'; modes: oversample, center, opencv"),
        ({"mean_crop": "stretch"}, "mean_crop must be one of window, resize, not 'stretch'"),
        ({"models": "age,height"}, "models are age and/or gender"),
        ({"models": ()}, "models are age and/or gender"),
    ],
)
def test_bad_values_are_one_line_when_built(fields, message):
    with pytest.raises(CaffeCompatError) as caught:
        AppSettings(**fields)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_name_of_the_package():
    import caffe_compat

    assert caffe_compat.AppSettings is AppSettings


def test_normal_forms_and_frozen():
    settings = AppSettings(
        models="gender, age",
        age_model=["a.prototxt", "a.caffemodel"],
        age_labels=["x", "y"],
        detector=["haar"],
    )
    assert settings.models == ("age", "gender")  # TASKS order, whatever order given
    assert settings.age_model == ("a.prototxt", "a.caffemodel")
    assert settings.model("age") == settings.age_model and settings.labels("age") == ("x", "y")
    assert settings.detector == "haar"  # the command line's one word
    assert AppSettings(detector=["face.onnx"]).detector == ("face.onnx",)
    assert settings.batch == DEFAULT_BATCH == AppSettings().batch
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.batch = 4  # type: ignore[misc]
    assert hash(settings) == hash(AppSettings(**dict(settings.items())))
    assert parse_models(["gender"]) == ("gender",)


def test_build_applies_overrides_and_names_unknown_ones():
    base = AppSettings(crop="center", batch=3)
    assert AppSettings.build(base) is base
    changed = AppSettings.build(base, batch=5)
    assert (changed.crop, changed.batch, base.batch) == ("center", 5, 3)
    with pytest.raises(TypeError, match=r"unknown setting.*batches.*settings are models"):
        AppSettings.build(base, batches=5)
    with pytest.raises(CaffeCompatError, match="batch must be at least 1"):
        AppSettings.build(base, batch=0)  # overrides are checked like the fields


def test_absolute_paths_keep_names_and_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = AppSettings(
        age_model=("age.prototxt", "age.caffemodel"),
        gender_model="levi_hassner_gender",  # a zoo name stays a name
        mean="mean.binaryproto",
        detector="face.onnx",
        cache_dir="cache",
    ).with_absolute_paths()
    here = str(tmp_path)
    assert settings.age_model == (f"{here}/age.prototxt", f"{here}/age.caffemodel")
    assert settings.gender_model == "levi_hassner_gender"
    assert (settings.mean, settings.detector) == (f"{here}/mean.binaryproto", f"{here}/face.onnx")
    assert settings.cache_dir == f"{here}/cache"
    kept = AppSettings(mean="zoo", detector="ssd").with_absolute_paths()
    assert (kept.mean, kept.detector) == ("zoo", "ssd")
    values = AppSettings(mean=(104.0, 117.0, 123.0)).with_absolute_paths()
    assert values.mean == (104.0, 117.0, 123.0)


def test_predictor_from_settings_equals_predictor_from_keywords(models, astronaut):
    options = {**onnx_options(models), "crop": "center", "batch": 2, "margin": 0.3}
    by_keywords = Predictor(**options)
    settings = AppSettings(**options)
    by_settings = Predictor(settings)
    mixed = Predictor(settings, margin=0.1)
    # the settings in force: back end and crop resolved, the rest as given
    assert by_settings.settings == by_keywords.settings
    assert by_settings.settings.backend == "onnx" and settings.backend is None
    assert (mixed.margin, mixed.batch, mixed.crop) == (0.1, 2, "center")
    assert (by_settings.batch, by_settings.margin, by_settings.crop) == (2, 0.3, "center")
    (a,), (b,) = by_keywords.predict(astronaut), by_settings.predict(astronaut)
    assert a == b
    (c,) = mixed.predict(astronaut)
    assert c.box == a.box and c.crop_box != a.crop_box  # the override's margin, not 0.3
    assert isinstance(by_settings.classifiers["age"], TaskNet)
    with pytest.raises(TypeError, match="unknown setting"):
        Predictor(settings, crops="center")
    with pytest.raises(TypeError, match="must be an AppSettings"):
        Predictor({"crop": "center"})  # type: ignore[arg-type]


def test_no_detect_in_the_settings_is_the_calls_default(models):
    image = np.full((60, 80, 3), 120, np.uint8)
    predictor = Predictor(AppSettings(**onnx_options(models), no_detect=True, crop="center"))
    (face,) = predictor.predict(image)
    assert face.box == face.crop_box == (0, 0, 80, 60)
    assert predictor.predict(image, no_detect=False) == []  # a flat image has no face


def test_photos_by_path_are_read_under_the_settings_limits(models, astronaut, tmp_path):
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), astronaut)
    predictor = Predictor(**onnx_options(models), crop="center", max_pixels=512 * 511)
    with pytest.raises(CaffeCompatError, match=r"512 x 512 = 262,144 pixels, over the 261,632"):
        predictor.predict(path)
    small = Predictor(**onnx_options(models), crop="center", max_bytes=1000)
    with pytest.raises(CaffeCompatError, match="over the 1,000-byte limit"):
        small.predict(str(path))
    assert len(Predictor(**onnx_options(models), crop="center").predict(path)) == 1


def test_app_names_differ_from_pycaffes():
    """pycaffe keeps Caffe's Classifier and Detector; the application's are TaskNet and
    FaceDetector (the old Classifier name still resolves, with a warning)."""
    import caffe_compat.app.faces as faces
    import caffe_compat.app.predictor as module

    with pytest.warns(DeprecationWarning, match="now TaskNet"):
        assert module.Classifier is TaskNet
    assert not hasattr(faces, "Detector") and callable(faces.make_detector)
    assert "Classifier" not in module.__all__


# --------------------------------------------------------------------------------------------
# One locate step, one first resize


def test_locate_grows_each_box_or_takes_the_whole_photo():
    image = np.zeros((100, 200, 3), np.uint8)
    found = [Detection((50, 20, 40, 30), 0.9), Detection((0, 0, 10, 10))]
    located = locate(image, lambda _: found, 0.5)
    assert located == [(d, expand_box(d.box, 0.5, 200, 100)) for d in found]
    assert located[0][1] == (30, 5, 80, 60)  # 20 and 15 more on each side
    assert locate(image, None, 0.5) == [(Detection((0, 0, 200, 100)), (0, 0, 200, 100))]


@pytest.mark.parametrize("mode", ["oversample", "center", "opencv"])
def test_first_resize_is_preprocess_first_step(astronaut, mode):
    face = np.ascontiguousarray(astronaut[100:260, 150:290])
    resized = first_resize(face, mode, size=256, crop=227)
    assert resized.shape == first_resize_shape(mode, size=256, crop=227)
    assert resized.dtype == (np.uint8 if mode == "opencv" else np.float32)
    # independently: what each mode resizes to, with OpenCV directly
    side = 227 if mode == "opencv" else 256
    source = face if mode == "opencv" else face.astype(np.float32)
    expected = cv2.resize(source, (side, side), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(resized, expected)
    assert np.array_equal(first_resize(resized, mode, size=256, crop=227), resized)  # idempotent
    mean = (78.4, 87.7, 114.9)
    assert np.array_equal(
        preprocess(face, mode, mean=mean).data, preprocess(resized, mode, mean=mean).data
    )


def test_settings_module_is_where_the_defaults_live():
    """No second default for the batch or the limits: the CLI, Ray and evaluate read these."""
    import inspect

    from caffe_compat.app import evaluate, scale
    from caffe_compat.cli import _models

    for module in (scale, evaluate, _models):
        source = inspect.getsource(module)
        assert "batch: int = 16" not in source and '"batch", 16' not in source
        assert "default=16" not in source, module.__name__
