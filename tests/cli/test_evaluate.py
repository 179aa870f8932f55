"""caffe-compat evaluate: the report, JSON, both crop modes, the confusion PNG, missing images,
with a stand-in predictor whose answers the test chose (see tests/app/test_evaluate.py), and once with
synthesized weights end to end."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from caffe_compat.cli.main import main

cv2 = pytest.importorskip("cv2")

HEADER = (
    "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
    "fiducial_yaw_angle\tfiducial_score"
)
AGES = ("(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)")
# per fold: (age text, gender, answer) -- the stand-in answers the same in every crop mode
FOLDS = {
    0: [("(25, 32)", "m", 4), ("(25, 23)", "f", 3), ("None", "u", 0), ("(0, 2)", "f", 2)],
    1: [("(8, 12)", "f", 2), ("(60, 100)", "m", 7), ("42", "m", 1)],
}


class StandIn:
    """Answers written in the image (pixel (0, 0), channel 0); built like a Predictor."""

    def __init__(self, models=("age",), batch=16, **options):
        self.task = models[0]
        self.batch = batch
        self.labels = {self.task: AGES if self.task == "age" else ("Male", "Female")}
        self.options = options

    def classify(self, images, crop):
        classes = len(self.labels[self.task])
        answers = [int(i[0, 0, 0]) % classes for i in images]
        return {self.task: np.eye(classes, dtype=np.float32)[answers]}

    def describe(self, crop):
        return {self.task: f"stand-in ({crop})"}


@pytest.fixture
def dataset(tmp_path):
    folds, faces = tmp_path / "folds", tmp_path / "faces"
    folds.mkdir()
    for index, rows in FOLDS.items():
        lines = [HEADER]
        for n, (age, gender, answer) in enumerate(rows):
            user, image, face_id = f"u{index}", f"{n}_x_o.jpg", 100 * index + n
            lines.append(f"{user}\t{image}\t{face_id}\t{age}\t{gender}\t1\t2\t3\t4\t0\t0\t50")
            pixels = np.full((30, 30, 3), 80, np.uint8)
            pixels[0, 0, 0] = answer
            path = faces / user / f"landmark_aligned_face.{face_id}.{image}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(cv2.imencode(".png", pixels)[1].tobytes())
        (folds / f"fold_{index}_data.txt").write_text("\n".join(lines) + "\n")
    return folds, faces


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr("caffe_compat.app.predictor.Predictor", StandIn)


def test_json_both_crops_and_confusion(dataset, stand_in, tmp_path, capsys):
    folds, faces = dataset
    png = tmp_path / "cm.png"
    args = ["evaluate", "--folds", str(folds), "--faces", str(faces), "--crop", "both"]
    code = main([*args, "--json", "--confusion", str(png)])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["modes"]) == {"oversample", "center"}
    # fold 0 age rows: (25, 32)->4 right, (25, 23)=(25, 32)->3 1-off, (0, 2)->2 two away
    # fold 1: (8, 12)->2 right, (60, 100)->7 right ("42" dropped)
    exact, near = [1 / 3, 1.0], [2 / 3, 1.0]
    for mode in data["modes"].values():
        assert [f["faces"] for f in mode["folds"]] == [3, 2]
        assert [f["exact_percent"] for f in mode["folds"]] == pytest.approx(
            [100 * e for e in exact]
        )
        assert [f["one_off_percent"] for f in mode["folds"]] == pytest.approx(
            [100 * n for n in near]
        )
        assert mode["exact_mean_percent"] == pytest.approx(100 * statistics.mean(exact))
        assert mode["exact_std_percent"] == pytest.approx(100 * statistics.pstdev(exact))
        assert mode["one_off_std_percent"] == pytest.approx(100 * statistics.pstdev(near))
        assert np.array(mode["confusion"]).sum() == 5
    assert [f["typo_fixed"] for f in data["folds"]] == [1, 0]
    assert [f["dropped"] for f in data["folds"]] == [1, 1]
    assert any("ONE model on every fold" in note for note in data["notes"])
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 300 and data["confusion_png"] == str(png)


def test_text_report(dataset, stand_in, capsys):
    folds, faces = dataset
    code = main(["evaluate", "--folds", str(folds), "--faces", str(faces), "--crop", "center"])
    out = capsys.readouterr().out
    assert code == 0
    assert "crop center:" in out and "fold 0:" in out and "fold 1:" in out
    assert "mean ± std over folds: exact 66.7 % ± 33.3 %, 1-off 83.3 % ± 16.7 %" in out
    assert "paper (held-out folds): exact 49.5 ± 4.4 %, 1-off 84.6 ± 1.7 %" in out
    assert "note: The paper trained a separate net for each of the five folds" in out


def test_gender_task(dataset, stand_in, capsys):
    folds, faces = dataset
    code = main(["evaluate", "--folds", str(folds), "--faces", str(faces), "--task", "gender"])
    out = capsys.readouterr().out
    assert code == 0
    # gender rows kept: fold 0 m, f, f (u dropped); fold 1 f, m, m. Answers mod 2:
    # fold 0: 4->0 (m right), 3->1 (f right), 2->0 (f wrong); fold 1: 2->0 (f wrong), 7->1 (m
    # wrong), 1->1 (m wrong)
    assert "fold 0:      3 faces  exact   66.7 %" in out
    assert "fold 1:      3 faces  exact    0.0 %" in out
    assert "1-off" not in out


def test_missing_images_reported(dataset, stand_in, capsys):
    folds, faces = dataset
    next(faces.glob("u1/*")).unlink()
    code = main(["evaluate", "--folds", str(folds), "--faces", str(faces)])
    out, err = capsys.readouterr()
    assert code == 0
    assert "skipped images: 1 missing, 0 unreadable" in out
    assert "1 face image(s) missing" in err


def test_no_images_at_all_is_exit_2(dataset, stand_in, tmp_path, capsys):
    folds, _ = dataset
    (tmp_path / "empty").mkdir()
    code = main(["evaluate", "--folds", str(folds), "--faces", str(tmp_path / "empty")])
    assert code == 2
    assert "none of the 5 face images" in capsys.readouterr().err


def test_end_to_end_with_synthesized_weights(dataset, tmp_path_factory, capsys):
    from _models import synth_models

    models = synth_models(tmp_path_factory)
    folds, faces = dataset
    args = ["evaluate", "--folds", str(folds), "--faces", str(faces), "--crop", "center"]
    code = main(
        [*args, "--json", "--age-model", models["age"]["prototxt"], models["age"]["weights"]]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [f["faces"] for f in data["modes"]["center"]["folds"]] == [3, 2]
    assert "on torch" in data["model"]


def test_progress_on_a_terminal_and_not_under_quiet(dataset, stand_in, capsys, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    folds, faces = dataset
    args = ["evaluate", "--folds", str(folds), "--faces", str(faces), "--crop", "center"]
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(args) == 0
    assert "evaluate: 100% [####################]  5/5 faces" in terminal.getvalue()
    quiet = Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    assert main(["-q", *args]) == 0
    assert "evaluate:" not in quiet.getvalue()
    capsys.readouterr()
