"""The OpenCV 4 judge: OpenCV's own Caffe reader run on the very same files, per-layer outputs.

OpenCV is a reference, not an oracle: the layers where it computes another function than Caffe
(declared on each layer type's registry entry as ``opencv_deviation``) are left out of the
comparison, with the taint flowing downstream, and said so in the report.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .. import registry
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


def opencv_known_deviations(graph: Graph) -> dict[str, str]:
    """Values OpenCV cannot be trusted on, with the reason; the taint flows downstream."""
    tainted: dict[str, str] = {}
    for node in graph.nodes:
        reason = registry.opencv_deviation(node, [graph.shapes.get(v) for v in node.inputs])
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


def deploy_prototxt(loaded: object, folder: Path) -> tuple[Path, str | None]:
    """The prototxt OpenCV should read: the user's own file when it is already a deploy net, else
    the inference form we built (OpenCV ignores phase rules, so a train_val net would clash)."""
    from ..io.writer import write_prototxt

    net = loaded.net  # type: ignore[attr-defined]
    graph = loaded.graph  # type: ignore[attr-defined]
    needs_rewrite = any(
        layer.include or layer.exclude or registry.role(layer.type) in ("data", "training")
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


TEMP_PREFIX = "caffe-compat-verify-"


def temp_folder() -> tempfile.TemporaryDirectory:
    """A folder for a verification's temporary files (ONNX models, the judge's values in
    streamed mode: gigabytes), named with this process's id. Folders of ours that a process
    killed before it could remove them left behind (a timeout's SIGKILL) are removed first."""
    remove_orphans()
    return tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-")


def remove_orphans(folder: str | None = None) -> list[str]:
    """Remove verification folders, owned by this user, whose process no longer runs; the
    removed paths. A folder whose process id is alive (or reused) is left alone."""
    import shutil

    from ..io.atomic import process_alive

    removed: list[str] = []
    if os.name != "posix":
        return removed
    base = Path(folder or tempfile.gettempdir())
    for path in base.glob(f"{TEMP_PREFIX}*-*"):
        pid = path.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid() or process_alive(int(pid)):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed
