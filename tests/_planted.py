"""A small net whose exported ONNX model carries a planted error in one layer (one filter of
conv2 scaled by 5 %): verify must find the first failing blob there, and the report show it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from caffe_compat.io import write_caffemodel
from caffe_compat.io.writer import definitions_only
from caffe_compat.ir.load import LoadedNet, load_net

NET = """name: "planted"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool" type: "Pooling" bottom: "conv2" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
PLANTED_LAYER = "conv2"
FIRST_FAILING = "conv2@conv2"  # conv2's own output, before relu2 rewrites the blob


def plant(model: onnx.ModelProto, layer: str, scale: float = 1.05) -> onnx.ModelProto:
    """``model`` with the first filter of ``layer``'s weights scaled: one wrong layer."""
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == f"{layer}/weight":
            array = numpy_helper.to_array(tensor).copy()
            array[0] *= scale
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(array, tensor.name))
            return model
    raise KeyError(layer)


def weights_for(loaded: LoadedNet, seed: int = 3) -> dict[str, list[np.ndarray]]:
    """He-scaled random weights in the shapes the net declares (numpy only: quick)."""
    rng = np.random.default_rng(seed)
    blobs = {}
    for node in loaded.graph.nodes:
        shapes = loaded.inference.params.get(node.name, [])
        if shapes:
            fan_in = int(np.prod(shapes[0][1:]))
            blobs[node.name] = [
                (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
                for shape in shapes
            ]
    return blobs


def planted_model(loaded: LoadedNet, layer: str) -> bytes:
    """The ONNX model of ``loaded`` with every blob an output and ``layer`` planted wrong."""
    from caffe_compat.converters.onnx.export import to_onnx

    values = [v for v in loaded.graph.values if v not in loaded.graph.inputs]
    return plant(to_onnx(loaded.graph, extra_outputs=values), layer).SerializeToString()


def planted_files(folder: Path) -> tuple[Path, Path, Path, LoadedNet]:
    """(prototxt, caffemodel, ONNX model with every blob an output and conv2 planted, the net)."""
    prototxt = folder / "planted.prototxt"
    prototxt.write_text(NET)
    loaded = load_net(prototxt)
    blobs = weights_for(loaded)
    weights = folder / "planted.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
    loaded = load_net(prototxt, weights)
    onnx_path = folder / "planted.onnx"
    onnx_path.write_bytes(planted_model(loaded, PLANTED_LAYER))
    return prototxt, weights, onnx_path, loaded
