"""caffe-compat predict: folders with junk in them, JSON lines, annotated copies, the back ends
agreeing through the CLI, missing zoo weights, the progress bar. Synthesized weights only."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from caffe_compat.cli.main import main
from caffe_compat.cli.predict import RECORD_KEYS
from caffe_compat.progress import Progress

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from _models import synth_models

    return synth_models(tmp_path_factory)


@pytest.fixture
def album(tmp_path, astronaut):
    """A folder: a photo with a face, a flat gray photo in a sub-folder, a PNG without an
    extension, a text file and a corrupt JPEG."""
    root = tmp_path / "album"
    (root / "trip").mkdir(parents=True)
    cv2.imwrite(str(root / "astronaut.jpg"), astronaut)
    cv2.imwrite(str(root / "trip" / "gray.png"), np.full((120, 160, 3), 128, np.uint8))
    (root / "trip" / "scan").write_bytes(cv2.imencode(".png", astronaut)[1].tobytes())
    (root / "notes.txt").write_text("shopping list\n")
    jpeg = cv2.imencode(".jpg", astronaut)[1].tobytes()
    (root / "trip" / "broken.jpg").write_bytes(jpeg[:3000])
    return root


def model_args(models, backend="onnx", tasks=("age", "gender")):
    args = []
    for task in tasks:
        if backend == "onnx":
            args += [f"--{task}-model", models[task]["onnx"]]
        else:
            args += [f"--{task}-model", models[task]["prototxt"], models[task]["weights"]]
    return args


def test_folder_with_junk_is_processed_and_summarised(album, models, capsys):
    code = main(["predict", str(album), *model_args(models)])
    out, err = capsys.readouterr()
    assert code == 0
    lines = out.strip().splitlines()
    faces = [line for line in lines if ": face 1 at " in line]
    assert len(faces) == 2  # astronaut.jpg and the extension-less PNG
    assert any(line.startswith(str(album / "astronaut.jpg")) for line in faces)
    assert any(line.startswith(str(album / "trip" / "scan")) for line in faces)
    assert f"{album / 'trip' / 'gray.png'}: no face found" in lines
    for line in faces:
        assert "age (" in line and "top-2: (" in line and "gender " in line and "x=" in line
    assert lines[-1].startswith("3 photo(s), 2 face(s), 1 without a face, 2 skipped")
    assert "crop oversample, backend onnx" in lines[-1]
    assert f"skipped {album / 'notes.txt'}: not an image" in err
    assert f"skipped {album / 'trip' / 'broken.jpg'}: corrupt" in err
    assert "\r" not in err  # no progress bar when stderr is not a terminal


def test_json_lines(album, models, capsys):
    code = main(["predict", str(album), "--json", *model_args(models)])
    out, err = capsys.readouterr()
    assert code == 0
    objects = [json.loads(line) for line in out.strip().splitlines()]
    assert all(tuple(o) == RECORD_KEYS for o in objects)  # one shape for every record
    kinds = {}
    for o in objects:
        kinds.setdefault(o["kind"], []).append(o)
    assert sorted(kinds) == ["face", "no_face", "skipped"]
    faces, (empty,) = kinds["face"], kinds["no_face"]
    assert len(faces) == 2
    assert empty == {
        **dict.fromkeys(RECORD_KEYS),
        "kind": "no_face",
        "path": str(album / "trip" / "gray.png"),
        "crop": "oversample",
        "backend": "onnx",
    }
    skipped = {o["path"]: o["error"] for o in kinds["skipped"]}
    assert skipped.keys() == {str(album / "notes.txt"), str(album / "trip" / "broken.jpg")}
    assert skipped[str(album / "notes.txt")].startswith("not an image")
    for face in faces:
        assert face["face"] == 1  # numbered from 1, as in the text output
        assert face["crop"] == "oversample" and face["backend"] == "onnx"
        assert face["error"] is None
        assert len(face["age_top2"]) == 2 and abs(sum(face["age_probs"]) - 1) < 1e-5
        x, y, w, h = face["box"]
        assert min(x, y) >= 0 and x + w <= 512 and y + h <= 512
    assert "3 photo(s), 2 face(s)" in err  # the summary stays off stdout


def test_torch_and_onnx_agree_through_the_cli(album, models, capsys):
    results = {}
    for backend in ("torch", "onnx"):
        photo = str(album / "astronaut.jpg")
        assert main(["predict", photo, "--json", *model_args(models, backend)]) == 0
        results[backend] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    (a,), (b,) = results["torch"], results["onnx"]
    assert (a["backend"], b["backend"]) == ("torch", "onnx")
    assert a["box"] == b["box"] and a["age"] == b["age"] and a["gender"] == b["gender"]
    diff = max(
        np.abs(np.subtract(a["age_probs"], b["age_probs"])).max(),
        np.abs(np.subtract(a["gender_probs"], b["gender_probs"])).max(),
    )
    assert diff <= 1e-4


def test_annotate_writes_copies(album, models, tmp_path, capsys):
    out_dir = tmp_path / "annotated"
    code = main(["predict", str(album), "--annotate", str(out_dir), *model_args(models)])
    capsys.readouterr()
    assert code == 0
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    assert written == ["album/astronaut.jpg", "album/trip/gray.png", "album/trip/scan.png"]
    original = cv2.imread(str(album / "astronaut.jpg"))
    drawn = cv2.imread(str(out_dir / "album" / "astronaut.jpg"))
    assert drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100  # boxes and text drawn
    gray = cv2.imread(str(out_dir / "album" / "trip" / "gray.png"))
    assert (gray == 128).all()  # nothing to draw on a photo without faces


def test_annotate_refuses_to_overwrite_the_photos(album, models, capsys):
    code = main(["predict", str(album / "astronaut.jpg"), "--annotate", str(album)])
    assert code == 2
    assert "would overwrite this photo" in capsys.readouterr().err


def test_only_age_center_crop_no_detect(album, models, capsys):
    photo = str(album / "trip" / "gray.png")
    args = ["predict", photo, "--models", "age", "--crop", "center", "--no-detect", "--json"]
    code = main([*args, *model_args(models, tasks=("age",))])
    (face,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert face["box"] == [0, 0, 160, 120] and face["crop"] == "center"
    assert face["gender"] is None and face["age"] is not None


def test_missing_path_is_reported_and_exit_2(album, models, capsys):
    code = main(
        ["predict", str(album / "astronaut.jpg"), str(album / "nope.jpg"), *model_args(models)]
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert "face 1 at" in out and f"skipped {album / 'nope.jpg'}: no such file or folder" in err


def test_missing_zoo_weights_is_one_line_and_exit_2(album, tmp_path, capsys):
    code = main(["predict", str(album / "astronaut.jpg"), "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert "age_net.caffemodel" in line and "not in the cache" in line


def test_photos_after_the_model_options(album, models, capsys):
    """`--age-model P W photo.jpg`: the model option keeps its net's two files, the photo is a
    photo (as is one after `--age-model MODEL.onnx`); with no photo, one line says what each
    option took."""
    photo = str(album / "trip" / "gray.png")
    common = ["--models", "age", "--crop", "center", "--no-detect", "--json"]
    age = models["age"]
    for model in ([age["prototxt"], age["weights"]], [age["onnx"]]):
        assert main(["predict", *common, "--age-model", *map(str, model), photo]) == 0
        (face,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert face["box"] == [0, 0, 160, 120]
    args = ["predict", *common, "--age-model", str(age["prototxt"]), str(age["weights"])]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no photo or folder given" in line
    assert f"--age-model took {age['prototxt']} {age['weights']} as its net" in line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_only_on_a_terminal():
    tty = _Terminal()
    bar = Progress(4, label="predict", unit="photos", stream=tty, interval=0)
    for _ in range(4):
        bar.update()
    bar.close()
    text = tty.getvalue()
    assert "\r\x1b[2Kpredict: 100% [" in text and "4/4 photos" in text
    assert text.endswith("\r\x1b[2K")  # erased on close
    plain = io.StringIO()
    quiet = Progress(4, label="predict", unit="photos", stream=plain)
    quiet.update(4)
    quiet.close()
    assert plain.getvalue() == ""
