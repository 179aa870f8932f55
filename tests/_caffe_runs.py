"""Real Caffe's recorded solver runs (data/caffe_runs, written by its record.py): loading them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from caffe_compat.io import load_prototxt
from caffe_compat.io.upgrade import upgrade_net
from caffe_compat.proto import caffe_pb2
from caffe_compat.train.solver import read_solver

RUNS = Path(__file__).parent / "train" / "data" / "caffe_runs"
CASES = sorted(p.stem for p in RUNS.glob("*.npz") if (RUNS / f"{p.stem}.solver.prototxt").exists())


@dataclass
class Blob:
    """A learnable blob as the update rules see it."""

    data: object
    diff: object
    lr_mult: float
    decay_mult: float


@dataclass
class Run:
    name: str
    solver: caffe_pb2.SolverParameter
    net: caffe_pb2.NetParameter
    arrays: dict[str, np.ndarray]
    names: list[str]  # "layer:index" in Caffe's learnable order
    mults: list[tuple[float, float]]  # (lr_mult, decay_mult) per blob
    statistics: list[bool]  # BatchNorm's blobs: changed by the forward pass, not the solver

    @property
    def steps(self) -> int:
        return int(self.arrays["p0_g"].shape[0])

    def weights(self, k: int) -> np.ndarray:
        return self.arrays[f"p{k}_w"]

    def grads(self, k: int) -> np.ndarray:
        return self.arrays[f"p{k}_g"]

    def history(self) -> list[np.ndarray]:
        count = sum(1 for key in self.arrays if key.startswith("h"))
        return [self.arrays[f"h{j}"] for j in range(count)]


def load_run(name: str) -> Run:
    if not (RUNS / f"{name}.npz").exists():
        pytest.skip(f"no recorded Caffe run {name}")
    with np.load(RUNS / f"{name}.npz") as handle:
        arrays = {key: handle[key] for key in handle.files}
    solver = read_solver(RUNS / f"{name}.solver.prototxt")
    net, _ = load_prototxt(RUNS / f"{name}.net.prototxt")
    upgrade_net(net)
    names = [str(n) for n in arrays["names"]]
    layers = {layer.name: layer for layer in net.layer}
    mults, statistics = [], []
    for entry in names:
        layer_name, index = entry.rsplit(":", 1)
        layer = layers[layer_name]
        statistics.append(layer.type == "BatchNorm")
        if layer.type == "BatchNorm":  # Caffe forces lr_mult 0 on its statistics
            mults.append((0.0, 1.0))
        elif int(index) < len(layer.param):
            spec = layer.param[int(index)]
            mults.append((float(spec.lr_mult), float(spec.decay_mult)))
        else:
            mults.append((1.0, 1.0))
    return Run(name, solver, net, arrays, names, mults, statistics)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (the issue's "within 1e-4 x max")."""
    scale = float(np.max(np.abs(want))) or 1.0
    return float(np.max(np.abs(np.asarray(got, np.float64) - want))) / scale
