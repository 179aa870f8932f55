"""The Ray Data engine end to end, on one local Ray session for the module (2 CPUs): the numbers
of single-process ``predict``, junk as error rows, manifests, the CLI, resuming after the driver
is SIGKILLed part-way, and the one-line refusal when Ray is not installed. Synthesized nets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _album import FACES, READABLE, TEST_MAX_PIXELS, UNREADABLE, onnx_options

from caffe_compat.app.faces import HaarDetector
from caffe_compat.app.images import read_image
from caffe_compat.app.predictor import Predictor
from caffe_compat.cli.main import main
from caffe_compat.errors import CaffeCompatError

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip(
        "ray", reason="Ray is not installed (pip install 'caffe-compat[ray]')"
    )
    pytest.importorskip("ray.data", reason="Ray Data is not installed")
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    ray.init(
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024 * 1024,
    )
    yield ray
    ray.shutdown()


def _model_args(models) -> list[str]:
    return ["--age-model", models["age"]["onnx"], "--gender-model", models["gender"]["onnx"]]


@pytest.mark.ray
def test_same_numbers_as_single_process_and_junk_as_rows(ray_session, album, models, tmp_path):
    from caffe_compat.app.scale import predict_dataset, read_results

    out = tmp_path / "out"
    summary = predict_dataset(
        album, out, workers=1, max_pixels=TEST_MAX_PIXELS, **onnx_options(models)
    )
    assert (summary.listed, summary.processed, summary.already_done) == (11, 11, 0)
    assert (summary.photos, summary.readable, summary.errors) == (11, 4, len(UNREADABLE))
    assert (summary.faces, summary.no_face, summary.duplicates_removed) == (4, 1, 0)
    table = read_results(out)
    keys = list(zip(table.column("path").to_pylist(), table.column("face").to_pylist()))
    assert len(keys) == len(set(keys)) == 4 + 1 + len(UNREADABLE)
    rows = table.to_pylist()
    for name, reason in UNREADABLE.items():
        (row,) = [r for r in rows if r["path"] == str(album / name)]
        assert row["face"] == 0 and reason in row["error"]
    predictor = Predictor(**onnx_options(models))
    worst = 0.0
    for name in READABLE:
        faces = predictor.predict(str(album / name))
        got = [r for r in rows if r["path"] == str(album / name)]
        assert len(faces) == FACES[name]
        if not faces:
            assert [(r["face"], r["faces"], r["error"]) for r in got] == [(0, 0, None)]
        for face, row in zip(faces, got):
            assert row["face"] == face.face  # numbered from 1, as the text output numbers faces
            assert tuple(row["box"]) == face.box and tuple(row["crop_box"]) == face.crop_box
            assert (row["age"], row["gender"]) == (face.age, face.gender)
            for task in ("age", "gender"):
                diff = np.abs(np.subtract(row[f"{task}_probs"], getattr(face, f"{task}_probs")))
                worst = max(worst, float(diff.max()))
            assert row["age_model"].startswith("age.onnx sha256=")
    assert worst <= 1e-6, worst


@pytest.mark.ray
def test_manifests_and_resuming_with_new_photos(ray_session, album, models, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from caffe_compat.app.scale import predict_dataset, read_results

    text = tmp_path / "photos.txt"
    text.write_text(f"{album / 'astronaut.jpg'}\nalbum/notes.txt\n")
    options = {"workers": 1, "crop": "center", **onnx_options(models)}
    first = predict_dataset(text, tmp_path / "out", **options)
    assert (first.processed, first.readable, first.errors, first.faces) == (2, 1, 1, 1)
    manifest = tmp_path / "photos.parquet"
    paths = ["album/astronaut.jpg", "album/notes.txt", "album/trip/scan"]
    pq.write_table(pa.table({"path": paths}), manifest)
    second = predict_dataset(manifest, tmp_path / "out", **options)
    assert (second.listed, second.processed, second.already_done) == (3, 1, 2)
    assert (second.photos, second.faces) == (3, 2)
    assert sorted(set(read_results(tmp_path / "out").column("path").to_pylist())) == sorted(
        str(tmp_path / p) for p in paths
    )
    with pytest.raises(CaffeCompatError, match=r"other settings \(crop, geometry\)"):
        predict_dataset(manifest, tmp_path / "out", **{**options, "crop": "oversample"})


@pytest.mark.ray
def test_cli_engine_ray(ray_session, album, models, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", str(album), "--engine", "ray", "--output", str(out), "--workers", "1"]
    args += ["--max-pixels", str(TEST_MAX_PIXELS), "--crop", "center", *_model_args(models)]
    assert main(args) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout.startswith("11 photo(s), 4 face(s), 1 without a face, 7 unreadable")
    assert "this run: 11 processed, 0 already done" in stdout
    assert f"unreadable {album / 'fifo'}: not a photo: a FIFO" in stderr
    assert main(args) == 0  # nothing left to do: no Ray job at all
    assert "this run: 0 processed, 11 already done" in capsys.readouterr().out
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_text("no photo here")
    (junk / "b.png").write_bytes(b"")
    code = main(
        ["predict", str(junk), "--engine", "ray", "--output", str(tmp_path / "j"), *args[6:]]
    )
    captured = capsys.readouterr()
    assert code == 2 and "error: no photo could be read" in captured.err
    assert "2 photo(s), 0 face(s), 0 without a face, 2 unreadable" in captured.out


def test_cli_options_that_need_the_ray_engine(album, capsys):
    assert main(["predict", str(album), "--output", "somewhere"]) == 2
    assert "--output go(es) with --engine ray" in capsys.readouterr().err
    assert main(["predict", str(album), str(album), "--engine", "ray", "--output", "x"]) == 2
    assert "takes one SOURCE" in capsys.readouterr().err


def test_without_ray_the_engine_says_so_in_one_line(album, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(["predict", str(album), "--engine", "ray", "--output", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert "needs Ray Data" in line and "pip install 'caffe-compat[ray]'" in line


def _many(root, astronaut, count: int):
    root.mkdir()
    for i in range(count):
        side = 360 + 8 * i
        photo = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / f"p{i:02d}.jpg"), photo[:, ::-1] if i % 2 else photo)
    (root / "zz-junk.jpg").write_text("junk")
    return root


@pytest.mark.ray
def test_sigkill_of_the_driver_then_restart(ray_session, astronaut, models, tmp_path):
    """A driver killed part-way (it joins this module's Ray session by address, so the kill hits
    the driver alone); the restart computes only the missing photos, and each (photo, face) is
    in the output exactly once."""
    from caffe_compat.app.scale import predict_dataset, read_results
    from caffe_compat.app.scale_output import completed_paths, shard_files

    source = _many(tmp_path / "many", astronaut, 16)
    out = tmp_path / "out"
    address = ray_session.get_runtime_context().gcs_address
    command = [
        sys.executable,
        "-c",
        "import sys; from caffe_compat.cli.main import main; sys.exit(main())",
        *("predict", str(source), "--engine", "ray", "--address", address, "--output", str(out)),
        *("--workers", "1", "--block", "2", *_model_args(models)),
    ]
    log = tmp_path / "driver.log"
    with log.open("wb") as stderr:
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path)
        deadline = time.monotonic() + 120
        while not shard_files(out):
            assert driver.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "no shard within 120 s"
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    done = completed_paths(out)
    assert 0 < len(done) < 17, "the kill should land part-way"
    summary = predict_dataset(source, out, workers=1, block=2, **onnx_options(models))
    # a call the dead driver's worker had in flight may have committed after the count above
    assert summary.already_done >= len(done)
    assert summary.already_done + summary.processed == 17 and summary.processed < 17
    table = read_results(out)
    keys = list(zip(table.column("path").to_pylist(), table.column("face").to_pylist()))
    detector = HaarDetector()
    expected = [(str(source / "zz-junk.jpg"), 0)]
    for path in sorted(source.glob("p*.jpg")):
        count = len(detector(read_image(path)))
        expected += [(str(path), face) for face in (range(1, count + 1) if count else [0])]
    assert sorted(keys) == sorted(expected)  # every (photo, face) exactly once
    assert (summary.photos, summary.errors) == (17, 1)
    assert not list(out.glob(".part-*"))
    # and on disk too, for any Parquet reader: no (photo, face) twice
    import pyarrow.parquet as pq

    everything = pq.read_table(out).select(["path", "face"]).to_pylist()
    assert sorted((r["path"], r["face"]) for r in everything) == sorted(keys)


class _Cluster:
    def __init__(self, cpus: int, gpus: int = 0) -> None:
        self.resources = {"CPU": float(cpus), "GPU": float(gpus)} if gpus else {"CPU": cpus}

    def cluster_resources(self) -> dict:
        return self.resources


def test_workers_and_resources_per_cluster():
    from caffe_compat.app.scale_session import placement as _plan

    # a local session sized for 2 one-thread workers (4 logical CPUs: 2 actors + 2 task slots)
    assert _plan(_Cluster(4), None, 1, "auto", sized=2) == (2, False, 1.0)
    # a cluster joined by address: half the CPUs for actors, half for decoding and detection
    assert _plan(_Cluster(16), None, 1, "auto") == (8, False, 1.0)
    assert _plan(_Cluster(16), None, 2, "auto") == (4, False, 2.0)
    # GPUs: one actor per GPU unless told otherwise, or none with device cpu
    assert _plan(_Cluster(16, gpus=4), None, 1, "auto") == (4, True, 1.0)
    assert _plan(_Cluster(16, gpus=4), None, 1, "cpu") == (8, False, 1.0)
    with pytest.raises(CaffeCompatError, match=r"need 3 CPUs .* has 2"):
        _plan(_Cluster(2), 2, 1, "auto")
    with pytest.raises(CaffeCompatError, match="no GPU"):
        _plan(_Cluster(8), None, 1, "cuda")


# --------------------------------------------------------------------------------------------
# Hostile folders and hostile ends (issue 21)


def _driver(*args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from caffe_compat.cli.main import main; sys.exit(main())",
        *args,
    ]


def _clean_env() -> dict[str, str]:
    """This process's environment without the address of the module's own Ray session."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}


def test_a_foreign_shard_is_refused_before_ray_starts(album, models, tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'caffe-compat[ray]')")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"path": [str(album / "astronaut.jpg")]}), out / "part-x.parquet")
    args = ["predict", str(album), "--engine", "ray", "--output", str(out), *_model_args(models)]
    assert main(args) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("caffe-compat: error: ") and str(out / "part-x.parquet") in line
    assert "not a shard of this engine" in line and captured.out == ""


def test_the_old_progress_keyword_still_takes_the_callback():
    from caffe_compat.app.scale import _on_progress

    def callback(done, total):
        return None

    assert _on_progress(callback, None) is callback
    assert _on_progress(None, None) is None
    with pytest.warns(DeprecationWarning, match="on_progress"):
        assert _on_progress(None, callback) is callback
    with pytest.raises(TypeError, match="on_progress"):
        _on_progress(callback, callback)


@pytest.mark.ray
def test_undecodable_and_hostile_names_get_rows_and_escaped_lines(
    ray_session, album, models, tmp_path, capsys
):
    import pyarrow.parquet as pq

    folder = os.fsencode(album)
    with open(os.path.join(folder, b"caf\xe9.jpg"), "wb") as handle:
        handle.write((album / "astronaut.jpg").read_bytes())
    (album / "x\x1b[2J\nfake.jpg: face 1.jpg").write_text("junk with a hostile name")
    out = tmp_path / "out"
    args = ["predict", str(album), "--engine", "ray", "--output", str(out), "--workers", "1"]
    args += ["--max-pixels", str(TEST_MAX_PIXELS), "--crop", "center", *_model_args(models)]
    assert main(args) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout.startswith("13 photo(s), 5 face(s), 1 without a face, 8 unreadable")
    assert "\x1b" not in stderr and "x\\x1b[2J\\x0afake.jpg: face 1.jpg" in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 8 and all(line.startswith("caffe-compat: unreadable ") for line in lines)
    rows = pq.read_table(out).to_pylist()
    (photo,) = [r for r in rows if r["path_bytes"] == os.path.join(folder, b"caf\xe9.jpg")]
    assert photo["path"] == str(album / "caf\\xe9.jpg") and photo["age"] is not None
    assert main(args) == 0  # resumed: the undecodable name counts as done
    assert "this run: 0 processed, 13 already done" in capsys.readouterr().out


def _ray_helpers(pid: int) -> dict[int, str]:
    from caffe_compat.app.scale_processes import descendants

    return descendants(pid)


def _still_running(processes: dict[int, str], seconds: float) -> list[str]:
    from caffe_compat.app.scale_processes import alive

    deadline = time.monotonic() + seconds
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    names = []
    for pid in alive(processes):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            names.append(handle.read().split(b"\0")[0].decode(errors="replace"))
    return names


@pytest.mark.ray
@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_driver_stops_every_ray_process_it_started(kill, astronaut, models, tmp_path):
    """SIGTERM: the driver shuts Ray down and exits 143; SIGKILL: its watcher stops what Ray
    leaves running (the dashboard and runtime-env agents ignore SIGTERM)."""
    from caffe_compat.app.scale_output import shard_files

    source = _many(tmp_path / "many", astronaut, 12)
    out = tmp_path / "out"
    command = _driver("predict", str(source), "--engine", "ray", "--output", str(out))
    command += ["--workers", "1", "--block", "2", *_model_args(models)]
    log = tmp_path / "driver.log"
    with log.open("wb") as stderr:
        driver = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path, env=_clean_env()
        )
        try:
            deadline = time.monotonic() + 180
            while not shard_files(out):
                assert driver.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "no shard within 180 s"
                time.sleep(0.05)
            helpers = _ray_helpers(driver.pid)
            assert len(helpers) >= 3  # the GCS, the raylet, agents, workers, the watcher
            driver.send_signal(kill)
            code = driver.wait(timeout=60)
            assert code == (128 + kill if kill == signal.SIGTERM else -kill)
        finally:
            driver.kill()
            driver.wait()
    assert _still_running(helpers, 15) == []


@pytest.mark.ray
def test_ray_that_cannot_start_under_a_memory_limit_is_one_line(album, models, tmp_path):
    """Under a 4 GiB address-space limit Ray's node never comes up; that is a start failure
    (exit 2, one line), and what it started is stopped."""
    limit = 4 << 30
    setup = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
    command = _driver("predict", str(album), "--engine", "ray", "--output", str(tmp_path / "o"))
    command[2] = setup + command[2]
    command += ["--workers", "1", "--max-pixels", str(TEST_MAX_PIXELS), *_model_args(models)]
    done = subprocess.run(command, capture_output=True, cwd=tmp_path, env=_clean_env(), timeout=400)
    if done.returncode == 0:
        pytest.skip("Ray starts within 4 GiB on this machine")
    assert done.returncode == 2, done.stderr.decode()[-3000:]
    (line,) = done.stderr.decode().splitlines()  # nothing of Ray's own around it
    assert line.startswith("caffe-compat: error: could not start Ray here: ")
    assert "4 GiB (ulimit -v)" in line
