"""Run the same inputs through every available executor and collect named values.

Each runner returns {value name: array}. Value names are the graph's (``blob`` for Caffe's final
blob, ``blob@layer`` for a value an in-place layer later overwrote).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from ..ir.graph import Graph
from ..proto import caffe_pb2


def opencv_caffe_available() -> str | None:
    """None when OpenCV's Caffe importer can run here, else why not."""
    try:
        import cv2
    except ImportError:
        return "OpenCV is not installed"
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        return f"OpenCV {cv2.__version__} has no Caffe importer (removed in 5.0; use 4.x)"
    return None


def _opencv_deviation(node: object) -> str | None:
    """Why OpenCV 4's Caffe reader computes a different function for this layer, if it does.

    Each entry was measured on OpenCV 4.14 against numpy versions of Caffe's formulas (see
    tests/converters); FACTS.md documents the LRN one."""
    p = node.param  # type: ignore[attr-defined]
    kind = node.type  # type: ignore[attr-defined]
    across = p.lrn_param.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS
    if kind == "LRN" and p.lrn_param.k != 1.0 and across:
        return f"OpenCV ignores LRN k (k={p.lrn_param.k:g})"
    if kind == "Log" and (
        p.log_param.base != -1.0 or p.log_param.scale != 1.0 or p.log_param.shift
    ):
        return "OpenCV ignores log_param and computes ln(x)"
    if kind == "Swish" and p.swish_param.beta != 1.0:
        return "OpenCV ignores Swish beta"
    if kind == "MVN" and p.mvn_param.normalize_variance and p.mvn_param.eps >= 1e-6:
        # Negligible at the default eps (1e-9); visible once eps nears the variance.
        return "OpenCV adds MVN eps to the variance, Caffe to the standard deviation"
    if kind == "InnerProduct" and p.inner_product_param.transpose:
        return "OpenCV ignores InnerProduct transpose"
    if kind == "Deconvolution" and any(d > 1 for d in p.convolution_param.dilation):
        return "OpenCV sizes a dilated Deconvolution as if undilated"
    if kind == "Scale" and len(node.inputs) > 1 and p.scale_param.bias_term:  # type: ignore[attr-defined]
        return "OpenCV's two-bottom Scale with bias_term gives other values"
    return None


def opencv_known_deviations(graph: Graph) -> dict[str, str]:
    """Values OpenCV cannot be trusted on, with the reason; the taint flows downstream."""
    tainted: dict[str, str] = {}
    for node in graph.nodes:
        reason = _opencv_deviation(node)
        if reason:
            reason = f'{reason} (layer "{node.name}")'
        upstream = [tainted[v] for v in node.inputs if v in tainted]
        reason = reason or (upstream[0] if upstream else None)
        if reason:
            for value in node.outputs:
                tainted[value] = reason
    return tainted


def run_opencv_caffe(
    graph: Graph,
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str],
    feeds: Mapping[str, np.ndarray],
    values: Iterable[str],
) -> dict[str, np.ndarray]:
    """OpenCV 4's own Caffe reader on the very same files, fusion and Winograd off, per-layer
    outputs."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableFusion(False)
    if hasattr(net, "enableWinograd"):
        # Caffe convolves by im2col + GEMM; Winograd (on by default since 4.7) is ~4x less exact.
        net.enableWinograd(False)
    known_layers = set(net.getLayerNames())
    wanted: dict[str, str] = {}
    for value in values:
        node = graph.producer(value)
        if node is None or node.outputs.index(value) != 0 or node.name not in known_layers:
            continue  # inputs, second tops and layers OpenCV renamed are not compared
        wanted[value] = node.name
    for name, array in feeds.items():
        net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
    if not wanted:
        return {}
    layer_names = list(dict.fromkeys(wanted.values()))
    results = net.forward(layer_names)
    by_layer = dict(zip(layer_names, results))
    return {value: np.array(by_layer[layer]) for value, layer in wanted.items()}


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Compute on CUDA as Caffe does while comparing: no TF32 (cuDNN's default for convolutions
    costs about three decimal digits) and no cuDNN, whose Winograd/FFT algorithms put ResNet-50's
    res5 blobs just past the tolerance; PyTorch's own im2col + GEMM path is Caffe's method."""
    import torch

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.enabled)
    cudnn.allow_tf32 = False
    matmul.allow_tf32 = False
    cudnn.enabled = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.enabled = saved


def run_torch(
    graph: Graph,
    feeds: Mapping[str, np.ndarray],
    values: Iterable[str],
    device: str = "cpu",
    model: object | None = None,
) -> dict[str, np.ndarray]:
    import torch

    from ..converters.torch.model import CaffeNet

    net = model if model is not None else CaffeNet(graph)
    net = net.to(device)  # type: ignore[attr-defined]
    inputs = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in feeds.items()}
    with torch.no_grad(), exact_fp32():
        out = net(**inputs, outputs=list(values))
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def run_onnxruntime(
    model_bytes: bytes, feeds: Mapping[str, np.ndarray], provider: str = "CPUExecutionProvider"
) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=[provider])
    names = [o.name for o in session.get_outputs()]
    outs = session.run(names, {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})
    return dict(zip(names, outs))


def onnxruntime_cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def deploy_prototxt(loaded: object, folder: Path) -> tuple[Path, str | None]:
    """The prototxt OpenCV should read: the user's own file when it is already a deploy net, else
    the inference form we built (OpenCV ignores phase rules, so a train_val net would clash)."""
    from ..io.writer import write_prototxt
    from ..ir.build import DATA_TYPES, TRAINING_ONLY_TYPES

    net = loaded.net  # type: ignore[attr-defined]
    graph = loaded.graph  # type: ignore[attr-defined]
    needs_rewrite = any(
        layer.include or layer.exclude or layer.type in DATA_TYPES | TRAINING_ONLY_TYPES
        for layer in net.layer
    )
    if not needs_rewrite:
        return Path(loaded.prototxt_path), None  # type: ignore[attr-defined]
    deploy = caffe_pb2.NetParameter(name=net.name)
    source = deploy.layer.add(name="input", type="Input")
    for name, shape in graph.inputs.items():
        source.top.append(name)
        source.input_param.shape.add().dim.extend(shape)
    for node in graph.nodes:
        layer = deploy.layer.add()
        layer.CopyFrom(node.param)
        del layer.blobs[:]
    path = folder / "deploy.prototxt"
    write_prototxt(path, deploy)
    return path, "OpenCV read the TEST-phase deploy form of the net (it ignores phase rules)"


def write_temp_caffemodel(graph: Graph, net: caffe_pb2.NetParameter, folder: Path) -> Path:
    """A V2 binary of the graph's attached weights, for references that read only that format."""
    from ..io.writer import definitions_only, write_caffemodel

    path = folder / "weights.caffemodel"
    blobs = {node.name: node.blobs for node in graph.nodes if node.blobs}
    write_caffemodel(path, definitions_only(net.layer), blobs)
    return path


def temp_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="caffe-compat-verify-")
