"""``type: "Python"`` in the float64 reference: the user's layer computes on float64 blobs (a
1e-12 step survives, which float32 would lose), and its backward is the user's, checked against
central differences, for its bottoms and for the parameter blobs its setup added."""

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


class Affine(caffe.Layer):
    # top = w * x + b per channel (axis 1), w and b the layer's own blobs (w starts at 1)

    def setup(self, bottom, top):
        self.blobs.add_blob(bottom[0].data.shape[1])
        self.blobs.add_blob(bottom[0].data.shape[1])
        self.blobs[0].data[...] = 1

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        w, b = (blob.data.reshape(1, -1, 1) for blob in self.blobs)
        top[0].data[...] = w * bottom[0].data + b

    def backward(self, top, propagate_down, bottom):
        g = top[0].diff
        self.blobs[0].diff[...] += (g * bottom[0].data).sum((0, 2))
        self.blobs[1].diff[...] += g.sum((0, 2))
        if propagate_down[0]:
            bottom[0].diff[...] = g * self.blobs[0].data.reshape(1, -1, 1)
"""


@pytest.fixture
def cube(tmp_path, monkeypatch):
    name = f"cube_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield (
        lambda shift: (
            f'layer {{ name: "c" type: "Python" bottom: "data" top: "c" python_param {{ '
            f'module: "{name}" layer: "{shift if isinstance(shift, str) else "Cube"}" '
            f'param_str: "{shift}" }} }}'
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


def test_parameter_blobs_take_the_nets_weights(run_layers, cube):
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    w, b = np.array([0.5, -2.0, 3.0]), np.array([1.0, 0.0, -1e-12])
    out = run_layers(cube("Affine"), weights={"c": [w, b]}, data=x)["c"]
    np.testing.assert_allclose(out, w[None, :, None] * x + b[None, :, None], rtol=1e-15)


def test_parameter_diffs_against_central_differences(grad_check, cube):
    x = np.random.default_rng(2).standard_normal((2, 3, 4))
    weights = {"c": [np.array([0.5, -2.0, 3.0]), np.array([0.1, 0.2, 0.3])]}
    report = grad_check(cube("Affine"), weights, data=x)
    assert report.checked == x.size + 6  # the bottom and both parameter blobs
