"""evaluate: Adience fold parsing and label rules (synthetic and the real released fold files),
per-fold exact / 1-off accuracy, mean ± std, missing images, the confusion matrix PNG.

The accuracy tests use a stand-in predictor whose answers the test chooses per image, so every
expected number is computed here, from the labels the test wrote and the answers it chose."""

from __future__ import annotations

import csv
import statistics

import numpy as np
import pytest

from caffe_compat.app.adience import AGE_CLASSES, find_folds, label_of, read_fold, read_folds
from caffe_compat.app.evaluate import (
    PROTOCOL_NOTE,
    confusion_image,
    evaluate_adience,
    one_off_hits,
    render,
    write_confusion,
)
from caffe_compat.errors import CaffeCompatError

cv2 = pytest.importorskip("cv2")

HEADER = (
    "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
    "fiducial_yaw_angle\tfiducial_score"
)


def fold_line(user: str, image: str, face_id: int, age: str, gender: str) -> str:
    return f"{user}\t{image}\t{face_id}\t{age}\t{gender}\t0\t414\t1086\t1383\t-115\t30\t17"


class StandIn:
    """A predictor whose answer for an image is written in the image: pixel (0, 0) channel 0 is
    the class predicted in center mode, channel 1 the class in oversample mode."""

    def __init__(self, task: str = "age", batch: int = 3) -> None:
        self.task, self.batch = task, batch
        self.labels = {task: AGE_CLASSES if task == "age" else ("Male", "Female")}
        self.calls = 0

    def classify(self, images, crop):
        self.calls += 1
        classes = len(self.labels[self.task])
        channel = {"center": 0, "oversample": 1}[crop]
        probs = np.full((len(images), classes), 0.01, np.float32)
        for row, image in enumerate(images):
            probs[row, int(image[0, 0, channel])] = 0.9
        return {self.task: probs / probs.sum(axis=1, keepdims=True)}

    def describe(self, crop):
        return {self.task: f"stand-in ({crop})"}


def write_face(folder, user, face_id, image, center: int, oversample: int) -> None:
    path = folder / user / f"landmark_aligned_face.{face_id}.{image}"
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((24, 20, 3), 50, np.uint8)
    pixels[0, 0, 0], pixels[0, 0, 1] = center, oversample
    # PNG bytes under Adience's .jpg name: lossless, so the answers survive (read by content)
    path.write_bytes(cv2.imencode(".png", pixels)[1].tobytes())


# (age text, gender, center answer, oversample answer) per row, per fold. Answers are class
# indices for the age task.
FOLDS = {
    0: [
        ("(25, 32)", "m", 4, 4),  # right in both modes
        ("(25, 23)", "f", 4, 5),  # typo row: true class (25, 32); oversample 1-off
        ("(0, 2)", "f", 1, 3),  # center 1-off, oversample 3 away
        ("None", "m", 0, 0),  # dropped for age
        ("35", "u", 0, 0),  # dropped for age and gender
        ("(60, 100)", "", 6, 7),  # center 1-off, oversample right
    ],
    1: [
        ("(8, 12)", "m", 2, 2),
        ("(38, 48)", "f", 0, 0),  # not a class text: dropped
        ("(48, 53)", "f", 3, 6),  # center 3 away, oversample right
        ("(15, 20)", "m", 2, 3),
    ],
    2: [
        ("(4, 6)", "f", 1, 0),
        ("(38, 43)", "m", 4, 5),
        ("(0, 2)", "m", 0, 0),
    ],
}


@pytest.fixture
def dataset(tmp_path):
    folds, faces = tmp_path / "folds", tmp_path / "faces"
    folds.mkdir()
    for index, rows in FOLDS.items():
        lines = [HEADER]
        for n, (age, gender, center, over) in enumerate(rows):
            user, image = f"user{index}@N0{n % 2}", f"{1000 + n}_abc_o.jpg"
            lines.append(fold_line(user, image, 10 * index + n, age, gender))
            write_face(faces, user, 10 * index + n, image, center, over)
        (folds / f"fold_{index}_data.txt").write_text("\n".join(lines) + "\n")
    (folds / "fold_frontal_0_data.txt").write_text(HEADER + "\n")  # not a fold file of ours
    return folds, faces


def expected_age_scores(crop: str) -> list[tuple[int, float, float]]:
    """(faces, exact, 1-off) per fold, from the table above."""
    column = {"center": 2, "oversample": 3}[crop]
    out = []
    for rows in FOLDS.values():
        pairs = []
        for row in rows:
            text = "(25, 32)" if row[0] == "(25, 23)" else row[0]
            if text in AGE_CLASSES:
                pairs.append((AGE_CLASSES.index(text), row[column]))
        exact = sum(t == p for t, p in pairs) / len(pairs)
        near = sum(abs(t - p) <= 1 for t, p in pairs) / len(pairs)
        out.append((len(pairs), exact, near))
    return out


# --------------------------------------------------------------------------------------------
# Parsing


def test_label_rules():
    assert label_of("age", "(25, 23)") == (4, True)
    assert label_of("age", " (60, 100) ") == (7, False)
    for dropped in ("None", "35", "(38, 48)", "(27, 32)", "", "(8, 23)"):
        assert label_of("age", dropped)[0] is None
    assert label_of("gender", "m") == (0, False) and label_of("gender", "f") == (1, False)
    for dropped in ("u", "", "M", "x"):
        assert label_of("gender", dropped)[0] is None


def test_read_synthetic_folds(dataset):
    folds_dir, faces_dir = dataset
    assert [p.name for p in find_folds(folds_dir)] == [f"fold_{i}_data.txt" for i in range(3)]
    age = read_folds(folds_dir, "age")
    assert [(f.index, f.rows, f.kept, f.dropped_total, f.fixed) for f in age] == [
        (0, 6, 4, 2, 1),
        (1, 4, 3, 1, 0),
        (2, 3, 3, 0, 0),
    ]
    assert dict(age[0].dropped) == {"None": 1, "35": 1}
    typo = age[0].faces[1]
    assert (typo.text, typo.label, typo.line) == ("(25, 23)", AGE_CLASSES.index("(25, 32)"), 3)
    assert typo.image_path(faces_dir) == (
        faces_dir / "user0@N01" / "landmark_aligned_face.1.1001_abc_o.jpg"
    )
    assert typo.image_path(faces_dir).is_file()
    gender = read_folds(folds_dir, "gender")
    assert [(f.kept, f.dropped_total) for f in gender] == [(4, 2), (4, 0), (3, 0)]
    assert dict(gender[0].dropped) == {"u": 1, "<empty>": 1}
    assert [face.label for face in gender[0].faces] == [0, 1, 1, 0]


def test_bad_fold_files(tmp_path):
    (tmp_path / "fold_0_data.txt").write_text("a\tb\tc\n1\t2\t3\n")
    with pytest.raises(CaffeCompatError, match="header lacks"):
        read_fold(tmp_path / "fold_0_data.txt", "age")
    with pytest.raises(CaffeCompatError, match="no such folder"):
        find_folds(tmp_path / "fold_0_data.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CaffeCompatError, match="no fold_"):
        find_folds(empty)


# --------------------------------------------------------------------------------------------
# Scores


def test_one_off():
    hits = one_off_hits(np.array([0, 1, 3, 7, 5]), np.array([1, 1, 1, 6, 7]))
    assert hits.tolist() == [True, True, False, True, False]


def test_age_scores_per_fold_mean_and_std(dataset):
    folds_dir, faces_dir = dataset
    stand_in = StandIn("age", batch=2)
    result = evaluate_adience(
        folds_dir, faces_dir, task="age", crops=("oversample", "center"), predictor=stand_in
    )
    for crop in ("oversample", "center"):
        expected = expected_age_scores(crop)
        mode = result.modes[crop]
        assert [s.faces for s in mode.folds] == [n for n, _, _ in expected]
        assert [s.exact for s in mode.folds] == pytest.approx([e for _, e, _ in expected])
        assert [s.one_off for s in mode.folds] == pytest.approx([o for _, _, o in expected])
        exact = [e for _, e, _ in expected]
        near = [n for _, _, n in expected]
        assert mode.exact == pytest.approx((statistics.mean(exact), statistics.pstdev(exact)))
        assert mode.one_off == pytest.approx((statistics.mean(near), statistics.pstdev(near)))
        assert int(mode.confusion.sum()) == sum(n for n, _, _ in expected)
    # the confusion matrix: rows true, columns predicted
    over = result.modes["oversample"].confusion
    assert over[AGE_CLASSES.index("(25, 32)"), 5] == 1 and over[0, 3] == 1 and over[7, 7] == 1
    assert result.missing == 0 and result.unreadable == 0
    text = render(result)
    assert "mean ± std" in text and PROTOCOL_NOTE in text and "1-off" in text
    assert "paper (held-out folds): exact 50.7 ± 5.1 %" in text
    data = result.to_dict()
    assert data["modes"]["center"]["paper"]["exact_mean_percent"] == 49.5
    assert data["folds"][0]["typo_fixed"] == 1


def test_gender_has_no_one_off(dataset):
    folds_dir, faces_dir = dataset

    # gender answers: reuse the age answers modulo 2
    class Gender(StandIn):
        def classify(self, images, crop):
            return {"gender": np.eye(2, dtype=np.float32)[[int(i[0, 0, 0]) % 2 for i in images]]}

    result = evaluate_adience(
        folds_dir, faces_dir, task="gender", crops=("center",), predictor=Gender("gender")
    )
    expected = []
    for rows in FOLDS.values():
        pairs = [({"m": 0, "f": 1}[g], c % 2) for _, g, c, _ in rows if g in ("m", "f")]
        expected.append(sum(t == p for t, p in pairs) / len(pairs))
    scores = result.modes["center"].folds
    assert [s.exact for s in scores] == pytest.approx(expected)
    assert all(s.one_off is None for s in scores)
    assert result.modes["center"].one_off == (None, None)
    assert "1-off" not in render(result)


def test_missing_images_are_counted_not_fatal(dataset):
    folds_dir, faces_dir = dataset
    victims = sorted(faces_dir.glob("user1@N00/*"))  # fold 1 rows 0 and 2
    assert len(victims) == 2
    victims[0].unlink()
    victims[1].write_bytes(b"\xff\xd8\xff not really a jpeg")
    result = evaluate_adience(
        folds_dir, faces_dir, task="age", crops=("center",), predictor=StandIn()
    )
    fold1 = result.modes["center"].folds[1]
    # fold 1 age rows: (8, 12) [row 0, missing], (48, 53) [row 2, unreadable], (15, 20)
    assert (fold1.faces, fold1.missing, fold1.unreadable) == (1, 1, 1)
    assert fold1.exact == 0.0 and fold1.one_off == 1.0  # (15, 20) answered (8, 12)
    assert (result.missing, result.unreadable) == (1, 1)
    assert "1 missing, 1 unreadable" in render(result)


def test_all_images_missing_is_an_error(dataset, tmp_path):
    folds_dir, _ = dataset
    empty = tmp_path / "nofaces"
    empty.mkdir()
    with pytest.raises(CaffeCompatError, match="none of the 10 face images"):
        evaluate_adience(folds_dir, empty, task="age", predictor=StandIn())


def test_confusion_png(dataset, tmp_path):
    folds_dir, faces_dir = dataset
    result = evaluate_adience(
        folds_dir, faces_dir, task="age", crops=("oversample", "center"), predictor=StandIn()
    )
    single = evaluate_adience(folds_dir, faces_dir, task="age", predictor=StandIn())
    path = write_confusion(result, tmp_path / "out" / "confusion.png")
    image = cv2.imread(str(path))
    assert image is not None and image.ndim == 3
    assert image.shape[1] == 2 * confusion_image(single).shape[1]  # one panel per crop mode
    assert image.shape[0] >= 8 * 40  # eight rows of cells
    assert not list((tmp_path / "out").glob(".*partial*"))  # atomic write left nothing behind


@pytest.mark.slow  # whole-net work; the fast tier must fit 6 minutes on 2 cores
def test_real_predictor_end_to_end(dataset, tmp_path_factory):
    """The default Predictor route with synthesized weights: runs, and agrees with the classes a
    Predictor gives the same images directly."""
    from _models import synth_models

    from caffe_compat.app.predictor import Predictor

    folds_dir, faces_dir = dataset
    models = synth_models(tmp_path_factory)
    options = {"age_model": models["age"]["onnx"]}
    result = evaluate_adience(folds_dir, faces_dir, task="age", crops=("center",), **options)
    assert sum(s.faces for s in result.modes["center"].folds) == 10
    predictor = Predictor(models="age", crop="center", **options)
    correct = []
    for fold in read_folds(folds_dir, "age"):
        images = [cv2.imread(str(f.image_path(faces_dir))) for f in fold.faces]
        predicted = predictor.classify(images)["age"].argmax(axis=1)
        correct.append(sum(int(p == f.label) for p, f in zip(predicted, fold.faces)))
    assert [s.correct for s in result.modes["center"].folds] == correct
    assert models["age"]["onnx"] in result.source


# --------------------------------------------------------------------------------------------
# The released fold files


def _independent_counts(path, task):
    """Counts with csv, written separately from caffe_compat.app.adience."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if task == "age":
        fixed = sum(r["age"] == "(25, 23)" for r in rows)
        kept = sum(r["age"] in AGE_CLASSES or r["age"] == "(25, 23)" for r in rows)
    else:
        fixed = 0
        kept = sum(r["gender"] in ("m", "f") for r in rows)
    return len(rows), kept, fixed


def test_released_fold_files(shared):
    folder = shared / "folds"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    for task in ("age", "gender"):
        folds = read_folds(folder, task)
        assert [f.index for f in folds] == [0, 1, 2, 3, 4]
        for fold in folds:
            rows, kept, fixed = _independent_counts(fold.path, task)
            assert (fold.rows, fold.kept, fold.fixed) == (rows, kept, fixed)
            assert fold.kept + fold.dropped_total == fold.rows
    # fold 0, counted with cut | sort | uniq -c on the file: 4496 rows; 72 "(25, 23)" rows;
    # 108 age rows dropped (52 None, 24 "35", 13 "3", 6 "55", 5 "36", 3 "13", 2 "58", 1 each of
    # "45", "22", "(38, 48)"); gender: 2049 m, 1958 f, 436 u, 53 empty.
    age0 = read_fold(folder / "fold_0_data.txt", "age")
    assert (age0.rows, age0.kept, age0.fixed, age0.dropped_total) == (4496, 4388, 72, 108)
    assert age0.dropped["None"] == 52 and age0.dropped["(38, 48)"] == 1
    typos = [f for f in age0.faces if f.text == "(25, 23)"]
    assert len(typos) == 72 and {f.label for f in typos} == {AGE_CLASSES.index("(25, 32)")}
    first = age0.faces[0]  # line 2 of the file: 30601258@N03, face 1, "(25, 23)", f
    assert (first.user_id, first.face_id, first.text, first.line) == (
        "30601258@N03",
        "1",
        "(25, 23)",
        2,
    )
    assert first.image_path("faces").as_posix() == (
        "faces/30601258@N03/landmark_aligned_face.1.10399646885_67c7d20df9_o.jpg"
    )
    gender0 = read_fold(folder / "fold_0_data.txt", "gender")
    assert (gender0.kept, gender0.dropped["u"], gender0.dropped["<empty>"]) == (4007, 436, 53)
    assert sum(f.label == 0 for f in gender0.faces) == 2049
