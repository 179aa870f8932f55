"""pycaffe's SGDSolver on the Levi-Hassner age net (the released train_val and solver settings,
on tests/train/test_levi_finetune.py's small ImageData fold of faces): it trains as
``caffe-compat train``'s engine does on the same net, data, seed and weights, iteration for
iteration. Minutes: marked ``train``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.train

STEPS = 4


def _fold_builder():
    path = Path(__file__).resolve().parents[1] / "train" / "test_levi_finetune.py"
    spec = importlib.util.spec_from_file_location("_levi_finetune", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.fold


def test_pycaffe_solver_trains_the_levi_net_as_the_engine(caffe, shared, tmp_path):
    pytest.importorskip("skimage")
    weights = shared / "caffe_reference" / "age_seed3_caffe_written.caffemodel"
    if not weights.exists():
        pytest.skip(f"{weights} is absent")
    from caffe_compat.io import read_caffemodel
    from caffe_compat.train.solver import Solver

    path = _fold_builder()(tmp_path, shared)
    engine = Solver(path, workers=0, weights=[str(weights)], device="cpu")
    engine.step(STEPS)
    expected = engine.net.layer_blobs()
    engine.close()

    solver = caffe.SGDSolver(str(path))
    solver.net.copy_from(str(weights))
    losses = []
    solver.add_callback(lambda: None, lambda: losses.append(float(solver.net.blobs["loss"].data)))
    solver.step(STEPS)
    assert solver.iter == STEPS and len(losses) == STEPS and all(np.isfinite(losses))
    for name, arrays in expected.items():
        for j, want in enumerate(arrays):
            got = solver.net.params[name][j].data
            scale = max(float(np.abs(want).max()), 1e-6)
            error = float(np.abs(got - want).max()) / scale
            assert error <= 1e-5, f"{name}/{j}: {error:.2e} of max"
    start = read_caffemodel(weights).blobs["fc8"][0]
    assert not np.array_equal(solver.net.params["fc8"][0].data, start)  # it did train
