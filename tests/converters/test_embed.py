"""Embed against numpy's version of Caffe's formula (OpenCV 4 has no Embed)."""

from __future__ import annotations

import numpy as np
import pytest


def indices(n: int) -> dict[str, np.ndarray]:
    return {"data": np.random.default_rng(n).integers(0, 11, (n, 3, 4)).astype(np.float32)}


@pytest.mark.parametrize("bias_term", [True, False])
def test_embed(layer_check, bias_term):
    prototxt = (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 } } }\n'
        f'layer {{ name: "e" type: "Embed" bottom: "data" top: "e" embed_param {{ num_output: 6 input_dim: 11 bias_term: {str(bias_term).lower()} }} }}'
    )
    rng = np.random.default_rng(0)
    blobs = {
        "e": [rng.standard_normal((11, 6)).astype(np.float32)]
        + ([rng.standard_normal(6).astype(np.float32)] if bias_term else [])
    }

    def expected(inputs, w):
        rows = w["e"][0][inputs["data"].astype(np.int64)]
        return {"e": rows + w["e"][1] if bias_term else rows}

    layer_check(prototxt, expected, feeds=indices, blobs=blobs, opencv=False)
