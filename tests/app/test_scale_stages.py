"""The stages of the Ray engine, called directly (no Ray): what travels between them loses
nothing (a face shrunk for shipping preprocesses bit for bit like the full cut), and the rows
they commit carry the numbers single-process ``Predictor`` computes for the same photos."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from _album import READABLE, TEST_MAX_PIXELS, UNREADABLE, onnx_options

from caffe_compat.app.images import MAX_FILE_BYTES as MAX_BYTES
from caffe_compat.app.predictor import Predictor
from caffe_compat.app.preprocess import preprocess
from caffe_compat.app.scale_sources import list_source
from caffe_compat.app.scale_stages import (
    AgeGenderWorker,
    Geometry,
    NetGroup,
    find_faces,
    geometry_of,
    read_bytes,
)
from caffe_compat.app.settings import AppSettings

pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (the ray extra)")
cv2 = pytest.importorskip("cv2")

AGE_MEAN = (78.4263377603, 87.7689143744, 114.895847746)


@pytest.mark.parametrize("mode", ["oversample", "center", "opencv"])
@pytest.mark.parametrize("shape", [(180, 150), (700, 640), (256, 256), (227, 227)])
def test_shrunk_face_preprocesses_exactly_like_the_cut(astronaut, mode, shape):
    face = np.ascontiguousarray(cv2.resize(astronaut, shape[::-1])[: shape[0], : shape[1]])
    geometry = Geometry(mode, 256, 227)
    shrunk = geometry.shrink(face)
    assert shrunk.shape == geometry.shape and shrunk.dtype == geometry.dtype
    means = [np.asarray(AGE_MEAN, np.float32)]
    if mode != "opencv":
        means.append(np.random.default_rng(1).uniform(0, 255, (3, 256, 256)).astype(np.float32))
    for mean in means:
        for mean_crop in ("window", "resize"):
            a = preprocess(face, mode, mean=mean, mean_crop=mean_crop)
            b = preprocess(shrunk, mode, mean=mean, mean_crop=mean_crop)
            assert np.array_equal(a.data, b.data)


def _stages(predictor: Predictor, options: dict, out_dir, **face_options):
    geometry = geometry_of(predictor, "age")
    assert geometry == geometry_of(predictor, "gender")
    settings = AppSettings(
        **options,
        crop=predictor.crop,
        backend=predictor.backend,
        threads=1,
        margin=face_options.get("margin", 0.4),
        no_detect=face_options.get("no_detect", False),
        max_pixels=TEST_MAX_PIXELS,
        max_bytes=MAX_BYTES,
    )
    group = NetGroup(("age", "gender"), 0)
    identities = {"age": "age-id", "gender": "gender-id"}
    worker = AgeGenderWorker(str(out_dir), settings, [group], [geometry], identities, False)
    return (settings, (geometry,)), worker


def _run_stages(paths, stage, worker, as_bytes=False):
    """The stages on ``paths``, given as text or (as the driver sends them) as bytes."""
    settings, geometries = stage
    column = pa.array([os.fsencode(p) for p in paths], pa.binary()) if as_bytes else paths
    batch = pa.table({"path": column})
    return worker(find_faces(read_bytes(batch, settings.max_bytes), settings, geometries))


@pytest.mark.parametrize("crop", [pytest.param("oversample", marks=pytest.mark.slow), "opencv"])
def test_rows_carry_the_single_process_numbers(album, models, tmp_path, crop):
    import pyarrow.parquet as pq

    options = {**onnx_options(models), "batch": 3}
    predictor = Predictor(crop=crop, **options)
    settings, worker = _stages(predictor, options, tmp_path / "out")
    paths = list_source(album)
    summary = _run_stages(paths, settings, worker)
    counts = [len(predictor.predict(str(album / name))) for name in READABLE]  # the same detector
    assert summary.to_pylist() == [
        {
            "photos": len(paths),
            "faces": sum(counts),
            "no_face": counts.count(0),
            "errors": len(UNREADABLE),
        }
    ]
    (shard,) = (tmp_path / "out").glob("part-*.parquet")
    rows = pq.read_table(shard).to_pylist()
    by_path: dict[str, list[dict]] = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
    assert sorted(by_path) == sorted(paths)
    for name, reason in UNREADABLE.items():
        (row,) = by_path[str(album / name)]
        assert row["face"] == 0 and row["faces"] is None and reason in row["error"]
        assert row["age"] is None and row["box"] is None
    worst = 0.0
    for name in READABLE:
        path = str(album / name)
        expected = predictor.predict(path)
        got = sorted(by_path[path], key=lambda r: r["face"])
        if not expected:
            assert [(r["face"], r["faces"], r["error"], r["age"]) for r in got] == [
                (0, 0, None, None)
            ]
            continue
        assert [r["face"] for r in got] == list(range(1, len(expected) + 1))
        for face, row in zip(expected, got):
            assert tuple(row["box"]) == face.box and tuple(row["crop_box"]) == face.crop_box
            assert row["faces"] == len(expected) and row["error"] is None
            assert (row["age"], row["gender"]) == (face.age, face.gender)
            assert (row["crop"], row["backend"]) == (crop, "onnx")
            assert (row["age_model"], row["gender_model"]) == ("age-id", "gender-id")
            for task in ("age", "gender"):
                diff = np.abs(np.subtract(row[f"{task}_probs"], getattr(face, f"{task}_probs")))
                worst = max(worst, float(diff.max()))
                assert row[f"{task}_prob"] == pytest.approx(getattr(face, f"{task}_prob"), abs=1e-6)
    assert sum(len(predictor.predict(str(album / n))) for n in READABLE) == 4
    assert worst <= 1e-6, worst


def test_whole_photo_without_detection(album, models, tmp_path):
    options = onnx_options(models)
    predictor = Predictor(crop="center", **options)
    settings, worker = _stages(predictor, options, tmp_path / "out", no_detect=True)
    path = str(album / "trip" / "gray.png")
    assert _run_stages([path], settings, worker).column("faces").to_pylist() == [1]
    import pyarrow.parquet as pq

    (row,) = pq.read_table(next((tmp_path / "out").glob("part-*"))).to_pylist()
    (face,) = predictor.predict(path, no_detect=True)
    assert row["box"] == [0, 0, 160, 120] == list(face.box)
    np.testing.assert_allclose(row["age_probs"], face.age_probs, atol=1e-6)


def test_names_that_are_not_utf8_get_rows_with_their_bytes(album, models, tmp_path):
    """One undecodable file name must not cost the run: its photo gets its rows, the exact
    name in ``path_bytes`` and an escaped one in ``path``; the listing knows it as done."""
    import pyarrow.parquet as pq

    from caffe_compat.app.scale_output import completed_paths

    folder = os.fsencode(album)
    shutil.copy(album / "astronaut.jpg", os.path.join(folder, b"caf\xe9.jpg"))
    with open(os.path.join(folder, b"junk-\xff.jpg"), "wb") as handle:
        handle.write(b"not a photo")
    options = onnx_options(models)
    predictor = Predictor(crop="center", **options)
    stage, worker = _stages(predictor, options, tmp_path / "out")
    paths = list_source(album)
    summary = _run_stages(paths, stage, worker, as_bytes=True)
    assert summary.column("photos").to_pylist() == [len(paths)]
    rows = pq.read_table(next((tmp_path / "out").glob("part-*"))).to_pylist()
    by_name = {row["path"]: row for row in rows if row["face"] in (0, 1)}
    photo = by_name[str(album / "caf\\xe9.jpg")]
    junk = by_name[str(album / "junk-\\xff.jpg")]
    assert photo["path_bytes"] == os.path.join(folder, b"caf\xe9.jpg") and photo["error"] is None
    assert junk["path_bytes"] == os.path.join(folder, b"junk-\xff.jpg")
    assert "not an image" in junk["error"]
    (same,) = predictor.predict(album / "astronaut.jpg")
    assert tuple(photo["box"]) == same.box and photo["age"] == same.age
    plain = by_name[str(album / "astronaut.jpg")]
    assert plain["path_bytes"] is None
    assert completed_paths(tmp_path / "out") == set(paths)  # a rerun finds nothing to do
