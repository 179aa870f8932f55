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
    """``build(prototxt, weights={layer: [arrays]}) -> Graph`` with those blobs attached."""

    def make(text: str, weights: dict | None = None):
        path = tmp_path / "net.prototxt"
        path.write_text(text)
        graph = load_net(path).graph
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
