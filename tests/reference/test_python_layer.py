"""``type: "Python"`` in the float64 reference: the user's layer computes on float64 blobs (a
1e-12 step survives, which float32 would lose), and its backward is the user's, checked against
central differences."""

from __future__ import annotations

import sys

import numpy as np
import pytest

LAYERS = """
import caffe


class Cube(caffe.Layer):
    def setup(self, bottom, top):
        self.shift = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data ** 3 + self.shift

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 3 * bottom[0].data ** 2 * top[0].diff
"""


@pytest.fixture
def cube(tmp_path, monkeypatch):
    name = f"cube_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield (
        lambda shift: (
            f'layer {{ name: "c" type: "Python" bottom: "data" top: "c" python_param {{ '
            f'module: "{name}" layer: "Cube" param_str: "{shift}" }} }}'
        )
    )
    sys.modules.pop(name, None)


def test_user_layer_computes_in_float64(run_layers, cube):
    x = np.array([[1.0, 2.0, -0.5]])
    out = run_layers(cube(1e-12), data=x)["c"]
    np.testing.assert_allclose(out - x**3, np.full((1, 3), 1e-12), rtol=1e-3)  # float32: 0


def test_user_backward_against_central_differences(grad_check, cube):
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    grad_check(cube(0.5), data=x)
