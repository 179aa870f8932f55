"""Fixtures for the convert/synth tools: a small net with a weight file per seed."""

from __future__ import annotations

import pytest

from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize

NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc/out" type: "InnerProduct" bottom: "conv1" top: "fc"
        inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def small(tmp_path):
    """A small net (a layer name with '/', BatchNorm + Scale to fold) and two weight files."""
    prototxt = tmp_path / "small.prototxt"
    prototxt.write_text(NET)
    loaded = load_net(prototxt)
    files = []
    for seed in (0, 1):
        path = tmp_path / f"w{seed}.caffemodel"
        write_caffemodel(path, definitions_only(loaded.net.layer), synthesize(loaded, seed=seed))
        files.append(path)
    return prototxt, files
