"""Record real Caffe's solver trajectories as test data (run with a pycaffe build; NOT run by the
tests, which read the arrays it wrote). Documents how every file in this folder was made.

    PYTHONPATH=<caffe>/python python record.py OUT_DIR

For each case: the net and solver definitions, the data (one HDF5 file), and an ``.npz`` with
per iteration t (0..19) the weights before the update (``p{k}_w``, 21 entries: the last is the
final weights), the accumulated diffs Caffe handed to ``ApplyUpdate`` (``p{k}_g``, read in the
``on_gradients_ready`` callback), the loss, the rate (``lr``, except for multistep, whose
``GetLearningRate`` has side effects), the BatchNorm statistics after each forward, and the
solver's history after the last step (``h{j}``, read from the snapshot it wrote). Snapshot cases
keep Caffe's own ``.solverstate``/``.solverstate.h5`` and caffemodel files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

STEPS = 20

NET = """name: "tiny"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "{source}" batch_size: 4 }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  {conv_params}
  convolution_param {{ num_output: 4 kernel_size: 3 {conv_extra}
    weight_filler {{ type: "gaussian" std: 0.3 }} bias_filler {{ type: "constant" value: 0.1 }} }} }}
{middle}layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
  {ip_params}
  inner_product_param {{ num_output: 3
    weight_filler {{ type: "gaussian" std: 0.2 }} bias_filler {{ type: "constant" value: -0.05 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }}
{test_layers}"""

BN = """layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
  scale_param { bias_term: true filler { type: "constant" value: 1.2 }
    bias_filler { type: "constant" value: 0.1 } } }
"""

ACCURACY = """layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label"
  top: "accuracy" include { phase: TEST } }
"""

FROZEN_CONV = "param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }"
MULTS_IP = "param { lr_mult: 1 decay_mult: 3 } param { lr_mult: 2 decay_mult: 0 }"

BASE = {
    "base_lr": 0.05,
    "lr_policy": '"fixed"',
    "momentum": 0.9,
    "weight_decay": 0.004,
    "display": 0,
    "max_iter": STEPS,
    "random_seed": 7,
    "solver_mode": "CPU",
}

CASES: dict[str, dict] = {
    "sgd_fixed": {},
    "sgd_step": {"lr_policy": '"step"', "gamma": 0.5, "stepsize": 6},
    "sgd_exp": {"lr_policy": '"exp"', "gamma": 0.93},
    "sgd_inv": {"lr_policy": '"inv"', "gamma": 0.1, "power": 0.75},
    "sgd_multistep": {"lr_policy": '"multistep"', "gamma": 0.3, "stepvalue": [3, 8, 8, 15]},
    "sgd_poly": {"lr_policy": '"poly"', "power": 1.5},
    "sgd_sigmoid": {"lr_policy": '"sigmoid"', "gamma": 0.4, "stepsize": 10},
    "nesterov": {"type": '"Nesterov"', "lr_policy": '"step"', "gamma": 0.5, "stepsize": 7},
    "adagrad": {"type": '"AdaGrad"', "momentum": 0, "base_lr": 0.1, "delta": 1e-6},
    "rmsprop": {"type": '"RMSProp"', "momentum": 0, "base_lr": 0.01, "rms_decay": 0.95},
    "adadelta": {"type": '"AdaDelta"', "momentum": 0.95, "base_lr": 1.0, "delta": 1e-6},
    "adam": {
        "type": '"Adam"',
        "base_lr": 0.01,
        "momentum2": 0.99,
        "lr_policy": '"step"',
        "gamma": 0.5,
        "stepsize": 8,
    },
    "iter_size2": {"iter_size": 2},
    "clip": {"clip_gradients": 0.5, "base_lr": 0.2},
    "clip_iter_size2": {"clip_gradients": 0.7, "iter_size": 2},
    "l1": {"regularization_type": '"L1"', "weight_decay": 0.01},
    "frozen": {"_net": {"conv_params": FROZEN_CONV, "ip_params": MULTS_IP}},
    "adam_frozen_l1": {
        "type": '"Adam"',
        "base_lr": 0.01,
        "regularization_type": '"L1"',
        "weight_decay": 0.01,
        "_net": {"conv_params": FROZEN_CONV, "ip_params": MULTS_IP},
    },
    "bn_sgd": {"_net": {"middle": BN}},
    "bn_adam": {"type": '"Adam"', "base_lr": 0.01, "_net": {"middle": BN}},
    "bn_adadelta": {
        "type": '"AdaDelta"',
        "momentum": 0.9,
        "base_lr": 0.5,
        "delta": 1e-6,
        "_net": {"middle": BN},
    },
}
# Snapshot after 10 steps, restore in a fresh solver, 10 more: both formats.
RESTORE_CASES = {
    "restore_binary": {
        "type": '"Nesterov"',
        "lr_policy": '"multistep"',
        "gamma": 0.5,
        "stepvalue": [4, 12],
        "snapshot_format": "BINARYPROTO",
    },
    "restore_hdf5": {
        "type": '"Adam"',
        "base_lr": 0.01,
        "snapshot_format": "HDF5",
        "_net": {"middle": BN},
    },
}
# A caffe.bin run whose log lines (display, average_loss, tests) the CLI must reproduce.
LOG_CASE = {
    "display": 1,
    "average_loss": 3,
    "test_iter": 2,
    "test_interval": 5,
    "lr_policy": '"step"',
    "gamma": 0.5,
    "stepsize": 6,
    "max_iter": 12,
    "snapshot": 10,
    "_net": {"test_layers": ACCURACY},
}


def solver_text(net_path: str, prefix: str, fields: dict) -> str:
    lines = [f'net: "{net_path}"', f'snapshot_prefix: "{prefix}"']
    for key, value in {**BASE, **fields}.items():
        if key.startswith("_"):
            continue
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key}: {item}")
    return "\n".join(lines) + "\n"


def net_text(source: str, extra: dict) -> str:
    values = {"conv_params": "", "ip_params": "", "middle": "", "test_layers": "", "conv_extra": ""}
    if "middle" in extra:  # BatchNorm cancels a bias before it: BN nets' convolutions have none
        values["conv_extra"] = "bias_term: false"
    values.update(extra)
    return NET.format(source=source, **values)


def learnable(net) -> list[tuple[str, int]]:
    return [(name, i) for name, blobs in net.params.items() for i in range(len(blobs))]


def history_from_state(path: str) -> list[np.ndarray]:
    from caffe.proto import caffe_pb2

    if path.endswith(".h5"):
        with h5py.File(path, "r") as handle:
            group = handle["history"]
            return [np.asarray(group[str(i)][()]) for i in range(len(group))]
    state = caffe_pb2.SolverState()
    state.ParseFromString(Path(path).read_bytes())
    return [np.asarray(h.data, dtype=np.float32).reshape(tuple(h.shape.dim)) for h in state.history]


class Recorder:
    def __init__(self, solver, multistep: bool) -> None:
        self.solver, self.multistep = solver, multistep
        self.names = learnable(solver.net)
        self.w: list[list[np.ndarray]] = [[] for _ in self.names]
        self.g: list[list[np.ndarray]] = [[] for _ in self.names]
        self.loss: list[float] = []
        self.lr: list[float] = []
        self.iters: list[int] = []

    def on_start(self) -> None:
        pass

    def on_gradients_ready(self) -> None:
        net = self.solver.net
        for k, (layer, i) in enumerate(self.names):
            self.w[k].append(net.params[layer][i].data.copy())
            self.g[k].append(net.params[layer][i].diff.copy())
        self.loss.append(float(net.blobs["loss"].data))
        self.iters.append(int(self.solver.iter))
        if not self.multistep:
            self.lr.append(float(self.solver.lr))

    def finish(self) -> dict[str, np.ndarray]:
        net = self.solver.net
        out: dict[str, np.ndarray] = {}
        for k, (layer, i) in enumerate(self.names):
            out[f"p{k}_w"] = np.stack([*self.w[k], net.params[layer][i].data.copy()])
            out[f"p{k}_g"] = np.stack(self.g[k])
        out["loss"] = np.asarray(self.loss, np.float32)
        out["iters"] = np.asarray(self.iters)
        if self.lr:
            out["lr"] = np.asarray(self.lr, np.float32)
        out["names"] = np.asarray([f"{layer}:{i}" for layer, i in self.names])
        return out


def write_data(folder: Path, rows: int = 10) -> Path:
    """10 rows in batches of 4 (batches wrap around the end); restore cases use one batch of 4,
    since a restored Caffe solver starts its data again from the first row."""
    rng = np.random.default_rng(2024)
    data = rng.normal(0, 1, (10, 3, 6, 6)).astype(np.float32)[:rows]
    label = rng.integers(0, 3, 10).astype(np.float32)[:rows]
    with h5py.File(folder / "data.h5", "w") as handle:
        handle["data"] = data
        handle["label"] = label
    (folder / "data.txt").write_text(str(folder / "data.h5") + "\n")
    return folder / "data.txt"


def run_case(caffe, name: str, fields: dict, work: Path, out: Path, restore: bool) -> None:
    case = work / name
    case.mkdir()
    source = write_data(case, 4 if restore else 10)
    net_path = case / "net.prototxt"
    net_path.write_text(net_text(str(source), fields.get("_net", {})))
    solver_path = case / "solver.prototxt"
    solver_path.write_text(solver_text(str(net_path), str(case / "snap"), fields))
    multistep = "multistep" in str(fields.get("lr_policy", ""))
    solver = caffe.get_solver(str(solver_path))
    solver.net.save(str(case / "init.caffemodel"))
    recorder = Recorder(solver, multistep)
    solver.add_callback(recorder.on_start, recorder.on_gradients_ready)
    arrays: dict[str, np.ndarray] = {}
    if restore:
        solver.step(STEPS // 2)
        solver.snapshot()
        h5 = "HDF5" in str(fields.get("snapshot_format", ""))
        ext = ".solverstate.h5" if h5 else ".solverstate"
        state = case / f"snap_iter_{STEPS // 2}{ext}"
        first = recorder
        solver = caffe.get_solver(str(solver_path))
        solver.restore(str(state))
        recorder = Recorder(solver, multistep)
        recorder.w = [list(w) for w in first.w]
        recorder.g = [list(g) for g in first.g]
        recorder.loss, recorder.lr, recorder.iters = first.loss, first.lr, first.iters
        solver.add_callback(recorder.on_start, recorder.on_gradients_ready)
        solver.step(STEPS // 2)
        (out / name).mkdir(exist_ok=True)
        for item in case.glob(f"snap_iter_{STEPS // 2}*"):
            shutil.copy(item, out / name / item.name)
    else:
        solver.step(STEPS)
    arrays.update(recorder.finish())
    solver.snapshot()
    state = next(case.glob(f"snap_iter_{STEPS}.solverstate*"))
    for j, h in enumerate(history_from_state(str(state))):
        arrays[f"h{j}"] = h
    with h5py.File(case / "data.h5", "r") as handle:
        arrays["data"] = handle["data"][()]
        arrays["label"] = handle["label"][()]
    np.savez_compressed(out / f"{name}.npz", **arrays)
    (out / f"{name}.solver.prototxt").write_text(
        solver_text("net.prototxt", "snap", fields).replace(str(case), ".")
    )
    (out / f"{name}.net.prototxt").write_text(net_text("data.txt", fields.get("_net", {})))


def run_log_case(caffe_bin: str, work: Path, out: Path) -> None:
    case = work / "log"
    case.mkdir()
    source = write_data(case)
    fields = dict(LOG_CASE)
    net_path = case / "net.prototxt"
    net_path.write_text(net_text(str(source), fields.get("_net", {})))
    solver_path = case / "solver.prototxt"
    solver_path.write_text(solver_text(str(net_path), str(case / "snap"), fields))
    import caffe

    solver = caffe.get_solver(str(solver_path))
    solver.net.save(str(case / "init.caffemodel"))
    env = {**os.environ, "GLOG_logtostderr": "1", "GLOG_minloglevel": "0"}
    result = subprocess.run(
        [
            caffe_bin,
            "train",
            "--solver",
            str(solver_path),
            "--weights",
            str(case / "init.caffemodel"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    (out / "log.caffe.txt").write_text(result.stderr.replace(str(case), "."))
    shutil.copy(case / "init.caffemodel", out / "log.init.caffemodel")
    with h5py.File(case / "data.h5", "r") as handle:
        np.savez_compressed(
            out / "log.data.npz", data=handle["data"][()], label=handle["label"][()]
        )
    (out / "log.solver.prototxt").write_text(solver_text("net.prototxt", "snap", fields))
    (out / "log.net.prototxt").write_text(net_text("data.txt", fields.get("_net", {})))


def main() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    import caffe

    caffe.set_mode_cpu()
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    only = set(sys.argv[2:])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, fields in CASES.items():
            if not only or name in only:
                run_case(caffe, name, fields, work, out, restore=False)
        for name, fields in RESTORE_CASES.items():
            if not only or name in only:
                run_case(caffe, name, fields, work, out, restore=True)
        caffe_bin = os.environ.get("CAFFE_BIN")
        if caffe_bin and (not only or "log" in only):
            run_log_case(caffe_bin, work, out)
    (out / "cases.json").write_text(json.dumps(sorted([*CASES, *RESTORE_CASES]), indent=1))


if __name__ == "__main__":
    main()
