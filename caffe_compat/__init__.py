"""caffe-compat: legacy Caffe models without Caffe.

Read any Caffe file (prototxt V1/V2, caffemodel V1/V2, HDF5, binaryproto), rebuild the net in
PyTorch and ONNX with Caffe's exact numerics, and verify parity against independent references.
Heavy dependencies (torch, onnx) load only when the functions that need them are first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_net": ("caffe_compat.ir.load", "load_net"),
    "LoadedNet": ("caffe_compat.ir.load", "LoadedNet"),
    "read_weights": ("caffe_compat.io", "read_weights"),
    "read_caffemodel": ("caffe_compat.io", "read_caffemodel"),
    "read_hdf5": ("caffe_compat.io", "read_hdf5"),
    "read_mean": ("caffe_compat.io", "read_mean"),
    "write_caffemodel": ("caffe_compat.io", "write_caffemodel"),
    "to_torch": ("caffe_compat.converters.torch.model", "to_torch"),
    "to_onnx": ("caffe_compat.converters.onnx.export", "to_onnx"),
    "convert": ("caffe_compat.tools.convert", "convert"),
    "load_torch": ("caffe_compat.tools.torch_weights", "load_torch"),
    "verify": ("caffe_compat.verify", "verify"),
    "synthesize": ("caffe_compat.tools.synth", "synthesize"),
    "load_pretrained": ("caffe_compat.app.pretrained", "load_pretrained"),
    "model_info": ("caffe_compat.app.pretrained", "model_info"),
    "predict": ("caffe_compat.app.predictor", "predict"),
    "Predictor": ("caffe_compat.app.predictor", "Predictor"),
    "AppSettings": ("caffe_compat.app.settings", "AppSettings"),
    "FacePrediction": ("caffe_compat.app.predictor", "FacePrediction"),
    "evaluate_adience": ("caffe_compat.app.evaluate", "evaluate_adience"),
    # OpenCV's readNetFromCaffe/readNet for OpenCV 5 (``from caffe_compat import dnn``).
    "dnn": ("caffe_compat.dnn", None),
    "register": ("caffe_compat.registry", "register"),
    "unregister": ("caffe_compat.registry", "unregister"),
    "CaffeCompatError": ("caffe_compat.errors", "CaffeCompatError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'caffe_compat' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    imported = importlib.import_module(module)
    value = imported if attribute is None else getattr(imported, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
