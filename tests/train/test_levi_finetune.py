"""``caffe-compat train`` fine-tunes the Levi-Hassner age net with its released solver settings
on a small ImageData fold built here (faces cut from scikit-image's sample photos): the loss
falls, a Ctrl-C snapshot resumes to the same weights as an uninterrupted run, and the fine-tuned
snapshot converts and verifies like any caffemodel. Minutes: marked ``train``.

The released weights are not on these machines; the start is a caffemodel real Caffe wrote in the
age net's shapes with synthesized weights. Those are not a trained net's: its logits reach 60 on
faces and its conv1 gradients are 10^5 times its weights, so training every layer at the
released rate diverges (it would with Caffe too). The fold therefore fine-tunes the classifier
(fc8) on the frozen features (``lr_mult: 0`` elsewhere), a common fine-tuning recipe; the solver
is the released one (SGD, base_lr 0.001, step policy, momentum 0.9, weight decay 5e-4), with
fewer iterations and a display smoothed over ``average_loss`` iterations."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe_compat.io import load_prototxt, read_caffemodel
from caffe_compat.io.upgrade import upgrade_net
from caffe_compat.io.writer import net_to_text
from caffe_compat.proto import caffe_pb2
from caffe_compat.train.solver import read_solver

pytestmark = pytest.mark.train

MAX_ITER, SNAPSHOT, BATCH = 24, 8, 8


def faces(folder: Path) -> list[str]:
    """24 face crops: the astronaut's and the cameraman's faces, shifted, scaled, flipped and
    lit differently; labels cycle through the 8 age groups."""
    import cv2
    from skimage import data

    sources = [
        np.ascontiguousarray(data.astronaut()[20:240, 150:330, ::-1]),
        cv2.cvtColor(np.ascontiguousarray(data.camera()[40:220, 180:340]), cv2.COLOR_GRAY2BGR),
    ]
    lines = []
    rng = np.random.default_rng(0)
    for index in range(24):
        face = sources[index % 2]
        h, w = face.shape[:2]
        top, left = rng.integers(0, 20, 2)
        crop = face[top : h - 20 + top, left : w - 20 + left]
        crop = np.clip(crop.astype(np.float32) * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
        if index % 3 == 0:
            crop = crop[:, ::-1]
        name = f"face{index:02d}.jpg"
        cv2.imwrite(str(folder / name), cv2.resize(crop, (300, 300)))
        lines.append(f"{name} {(4, 2)[index % 2]}")
    return lines


def fold(folder: Path, levi: Path) -> Path:
    """The released train_val with its LMDB layers replaced by ImageData over the fold."""
    lines = faces(folder)
    (folder / "train.txt").write_text("\n".join(lines[:16]) + "\n")
    (folder / "val.txt").write_text("\n".join(lines[16:]) + "\n")
    net, _ = load_prototxt(levi / "train_val_age_fold0.prototxt")
    upgrade_net(net)
    layers = []
    for layer in net.layer:
        if layer.type == "Data":
            test = any(rule.phase == caffe_pb2.TEST for rule in layer.include)
            image = caffe_pb2.LayerParameter(name=layer.name, type="ImageData")
            image.top.extend(layer.top)
            image.include.extend(layer.include)
            image.transform_param.CopyFrom(layer.transform_param)
            image.transform_param.mean_file = str(levi / "mean.binaryproto")
            p = image.image_data_param
            p.source = str(folder / ("val.txt" if test else "train.txt"))
            p.root_folder = f"{folder}/"
            p.batch_size, p.new_height, p.new_width = BATCH, 256, 256
            p.shuffle = not test
            layer = image
        elif layer.type in ("Convolution", "InnerProduct") and layer.name != "fc8":
            for spec in layer.param:
                spec.lr_mult = 0  # frozen features: fine-tune the classifier
        layers.append(layer)
    del net.layer[:]
    net.layer.extend(layers)
    (folder / "train_val.prototxt").write_text(net_to_text(net))
    solver = read_solver(levi / "solver_fold0.prototxt")  # base_lr, step policy, momentum, decay
    solver.net = str(folder / "train_val.prototxt")
    solver.test_iter[:] = [1]
    solver.test_interval = SNAPSHOT
    solver.display = 1
    solver.average_loss = 8
    solver.max_iter = MAX_ITER
    solver.snapshot = SNAPSHOT
    solver.solver_mode = caffe_pb2.SolverParameter.CPU
    solver.random_seed = 3
    path = folder / "solver.prototxt"
    text = net_to_text(solver)
    path.write_text(text)
    return path


def train(solver: Path, prefix: Path, *extra: str, interrupt_at: int | None = None):
    text = solver.read_text().replace(
        re.search(r'snapshot_prefix: "[^"]*"', solver.read_text()).group(0),
        f'snapshot_prefix: "{prefix}"',
    )
    own = solver.with_name(prefix.name + "_solver.prototxt")
    own.write_text(text)
    command = [sys.executable, "-m", "caffe_compat", "train", "--solver", str(own), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if interrupt_at is not None and f"] Iteration {interrupt_at}, lr" in line:
            process.send_signal(signal.SIGINT)
            interrupt_at = None
    assert process.wait(timeout=600) == 0, "".join(lines[-20:])
    return lines


@pytest.fixture(scope="module")
def weights(shared: Path) -> Path:
    """A caffemodel real Caffe wrote in the age net's shapes (synthesized weights)."""
    path = shared / "caffe_reference" / "age_seed3_caffe_written.caffemodel"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared, weights):
    pytest.importorskip("skimage")
    folder = tmp_path_factory.mktemp("levi")
    solver = fold(folder, shared)
    straight = train(solver, folder / "straight", "--weights", str(weights))
    stopped = train(
        solver, folder / "stopped", "--weights", str(weights), interrupt_at=SNAPSHOT + 3
    )
    return folder, straight, stopped


def losses(lines):
    found = [re.search(r"Iteration (\d+) \(.*\), loss = (\S+)", line) for line in lines]
    return {int(m.group(1)): float(m.group(2)) for m in found if m}


def test_loss_falls(runs):
    _, straight, _ = runs
    shown = losses(straight)
    assert len(shown) >= MAX_ITER
    first, last = shown[7], shown[MAX_ITER - 1]  # means over iterations 0-7 and 16-23
    assert last < 0.8 * first, shown
    tests = [line for line in straight if "Test net output #0: accuracy" in line]
    assert len(tests) == MAX_ITER // SNAPSHOT + 1  # iterations 0, 8, 16 and after the last


def test_sigint_snapshot_resumes_to_the_same_weights(runs, weights):
    folder, _, stopped = runs
    assert any("Optimization stopped early." in line for line in stopped)
    # The iteration running when the signal lands completes, then Caffe's snapshot.
    written = [
        m.group(1)
        for m in (re.search(r"solver state to binary proto file (\S+)", x) for x in stopped)
        if m
    ]
    state = Path(written[-1])
    assert int(re.search(r"_iter_(\d+)", state.name).group(1)) in (SNAPSHOT + 4, SNAPSHOT + 5)
    resumed = train(folder / "solver.prototxt", folder / "stopped", "--snapshot", str(state))
    assert any(f"Resuming from {state}" in line for line in resumed)
    a = read_caffemodel(folder / f"straight_iter_{MAX_ITER}.caffemodel")
    b = read_caffemodel(folder / f"stopped_iter_{MAX_ITER}.caffemodel")
    assert a.blobs.keys() == b.blobs.keys()
    for layer in a.blobs:
        for x, y in zip(a.blobs[layer], b.blobs[layer]):
            np.testing.assert_array_equal(x, y, err_msg=layer)
    start = read_caffemodel(weights)
    assert not np.array_equal(start.blobs["fc8"][0], a.blobs["fc8"][0])  # it did train


def test_finetuned_snapshot_converts_and_verifies(runs, tmp_path, shared):
    folder, _, _ = runs
    weights = folder / f"straight_iter_{MAX_ITER}.caffemodel"
    deploy = shared / "deploy_age.prototxt"
    base = [sys.executable, "-m", "caffe_compat"]
    convert = subprocess.run(
        [*base, "convert", str(deploy), str(weights), "-o", str(tmp_path / "age"), "--to", "onnx"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert convert.returncode == 0, convert.stderr
    assert (tmp_path / "age.onnx").exists()
    verify = subprocess.run(
        [*base, "verify", str(deploy), str(weights)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
