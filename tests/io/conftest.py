"""Small nets and weights for the reader/writer tests: every dimension differs, so a transposed or
misaligned blob cannot pass by accident."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat.io.prototxt import parse_text
from caffe_compat.proto import caffe_pb2

NET_TEXT = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 7 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 5 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def small_blobs(seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Weights in the shapes NET_TEXT needs (conv 5x3x3x3, fc 4x(5*5*7))."""
    rng = np.random.default_rng(seed)
    return {
        "conv": [
            rng.standard_normal((5, 3, 3, 3)).astype(np.float32),
            rng.standard_normal(5).astype(np.float32),
        ],
        "fc": [
            rng.standard_normal((4, 175)).astype(np.float32),
            rng.standard_normal(4).astype(np.float32),
        ],
    }


@pytest.fixture
def small_net() -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    parse_text(NET_TEXT, net)
    return net


@pytest.fixture
def v1_net(small_net) -> caffe_pb2.NetParameter:
    """The same net without its Input layer (V1 has no Input type)."""
    net = caffe_pb2.NetParameter(name=small_net.name)
    net.layer.extend(layer for layer in small_net.layer if layer.type != "Input")
    return net


@pytest.fixture
def blobs() -> dict[str, list[np.ndarray]]:
    return small_blobs()


@pytest.fixture
def small_prototxt(tmp_path):
    path = tmp_path / "small.prototxt"
    path.write_text(NET_TEXT)
    return path
