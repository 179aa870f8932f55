"""Small nets for the float64 reference: prototxt text, inputs from arrays, weights by hand."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat.ir.load import load_net


def inputs_layer(**arrays: np.ndarray) -> str:
    """One Input layer declaring a top per array, with the array's shape."""
    tops = " ".join(f'top: "{name}"' for name in arrays)
    shapes = " ".join(
        "shape { " + " ".join(f"dim: {d}" for d in a.shape) + " }" for a in arrays.values()
    )
    return f'layer {{ name: "input" type: "Input" {tops} input_param {{ {shapes} }} }}\n'


@pytest.fixture
def build(tmp_path):
    """``build(prototxt, weights={layer: [arrays]}, **load_net_options) -> Graph`` with those
    blobs attached."""

    def make(text: str, weights: dict | None = None, **options):
        path = tmp_path / "net.prototxt"
        path.write_text(text)
        graph = load_net(path, **options).graph
        for name, blobs in (weights or {}).items():
            graph.node(name).blobs = [np.asarray(b) for b in blobs]
        return graph

    return make


@pytest.fixture
def run_layers(build):
    """``run_layers(layers_text, weights=None, outputs=None, **arrays)``: the layers after an
    Input layer declaring ``arrays`` (``data=x`` usually), run by the reference."""
    from caffe_compat.reference import forward

    def run(layers: str, weights: dict | None = None, outputs=None, **arrays):
        graph = build(inputs_layer(**arrays) + layers, weights)
        return forward(graph, arrays, outputs=outputs)

    return run


@pytest.fixture
def grad_check(tmp_path):
    """``grad_check(layers_text, weights=None, *, phase="TEST", threshold=1e-5, step=1e-4,
    kink_range=-1, bottoms=None, state=None, **arrays)``: the one layer after an Input layer
    declaring ``arrays``, its float64 backward against central differences (Caffe's
    GradientChecker, caffe_compat.reference.gradient_check); returns the report."""
    from caffe_compat.reference.gradient_check import check_gradient

    def check(layers: str, weights: dict | None = None, *, phase: str = "TEST", **options):
        arrays = {k: v for k, v in options.items() if isinstance(v, np.ndarray)}
        settings = {k: v for k, v in options.items() if k not in arrays}
        settings.setdefault("step", 1e-4)
        settings.setdefault("threshold", 1e-5)
        path = tmp_path / "grad.prototxt"
        path.write_text(inputs_layer(**arrays) + layers)
        graph = load_net(path, phase=phase, training=True).graph
        for name, blobs in (weights or {}).items():
            graph.node(name).blobs = [np.asarray(b, dtype=np.float64) for b in blobs]
        report = check_gradient(graph, arrays, **settings)
        assert report.passed, str(report)
        assert report.checked > 0
        return report

    return check
