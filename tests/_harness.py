"""Shared test harness (tests/ is on pytest's pythonpath; the repo root is not).

``check_layer(tmp_path, request, prototxt, expected=None, ...)`` writes the net and synthesised weights as real files,
then compares every blob of our PyTorch module and our ONNX model in ONNX Runtime with OpenCV 4's
Caffe reader (``opencv=True``) and with ``expected(feeds, weights) -> {blob: array}``, a numpy
version of Caffe's formula written in the test, at the prototxt's batch and at batch 3. The ONNX
model passes onnx's full checker, and at batch 3 it is compared with torch value by value. At the
last batch both back ends are also compared, value by value, with caffe_compat.reference (float64).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import onnx

from caffe_compat.converters.onnx.export import to_onnx
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.infer import batch_dependence
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify.backends import run_onnxruntime, run_torch
from caffe_compat.verify.opencv import opencv_caffe_available

INPUT = 'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: {c} dim: {h} dim: {w} }} }} }}\n'
verification = importlib.import_module("caffe_compat.verify")  # the package, not the function
Feeds = Callable[[int], dict[str, np.ndarray]]


def net(body: str, c: int = 5, h: int = 7, w: int = 9) -> str:
    return INPUT.format(c=c, h=h, w=w) + body


def uniform(low: float, high: float) -> Feeds:
    """Feeds for a one-input net named "data" of shape (N, 5, 7, 9), uniform in [low, high)."""
    return lambda n: {
        "data": np.random.default_rng(n).uniform(low, high, (n, 5, 7, 9)).astype(np.float32)
    }


def parity_devices() -> tuple[str, ...]:
    """PyTorch devices every parity test covers: the CPU, plus CUDA where a device exists."""
    import torch

    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def check_layer(
    tmp_path,
    request,
    prototxt,
    expected=None,
    *,
    feeds=None,
    blobs=None,
    opencv=True,
    tol=1e-4,
    dynamic=True,
    method="he",
):
    """See the module docstring; returns the verify reports (one per batch size)."""
    # OpenCV 4 is an extra judge where installed; the float64 reference judges everywhere.
    opencv = opencv and opencv_caffe_available() is None
    path = tmp_path / "net.prototxt"
    path.write_text(prototxt)
    loaded = load_net(path)
    weights = blobs if blobs is not None else synthesize(loaded, method=method)
    model_path = tmp_path / "net.caffemodel"
    write_caffemodel(model_path, definitions_only(loaded.net.layer), weights)
    loaded = load_net(path, model_path)
    graph = loaded.graph
    if batch_dependence(graph) is not None:
        dynamic = False  # a net computing across its batch axis runs at its declared batch

    def make(batch: int, seed: int) -> dict[str, np.ndarray]:
        if feeds is not None:
            return feeds(batch)
        rng = np.random.default_rng(seed)
        return {
            n: rng.standard_normal((batch, *s[1:])).astype(np.float32)
            for n, s in graph.inputs.items()
        }

    model = to_onnx(graph, extra_outputs=[v for v in graph.values if v not in graph.inputs])
    onnx.checker.check_model(model, full_check=True)  # strict shape inference, opset 17
    assert model.opset_import[0].version == 17
    reports = []
    for batch in (2, 3) if dynamic else (2,):
        inputs = make(batch, batch)
        reference = expected(inputs, weights) if expected else None
        report = verification.verify_loaded(
            loaded,
            weights_path=str(model_path),
            feeds=inputs,
            reference=reference,
            onnx_model=model.SerializeToString(),
            opencv=opencv,
            tolerance=verification.Tolerance(rtol=tol, atol=tol),
            devices=parity_devices(),
        )
        assert report.passed, report.render(all_rows=False)
        stored = {graph.blob_of[c.value] for c in report.comparisons if c.reference == "stored"}
        assert set(reference or ()) <= stored, "a numpy reference blob was not compared"
        assert not opencv or any(c.reference == "opencv" for c in report.comparisons)
        if batch == (3 if dynamic else 2):
            values = [v for v in graph.values if v not in graph.inputs]
            ours = run_torch(graph, inputs, values)
            theirs = run_onnxruntime(model.SerializeToString(), inputs)
            if dynamic:
                for value in values:
                    assert theirs[value].shape == ours[value].shape, value
                    np.testing.assert_allclose(theirs[value], ours[value], rtol=tol, atol=tol)
            check_against_reference(loaded, inputs, {"torch": ours, "onnx": theirs}, tol)
        reports.append(report)
    return reports


def check_against_reference(loaded, feeds, produced, tol) -> None:
    """Every value of each back end within max(tol * max|ref|, tol) of the float64 reference
    (caffe_compat.reference, a numpy transcription of Caffe's layers sharing no code with them)."""
    from caffe_compat.reference import forward
    from caffe_compat.verify.detections import align_detections

    graph = loaded.graph
    values = [v for v in graph.values if v not in graph.inputs]
    reference = forward(loaded, feeds, outputs=values)
    detections = {v for n in graph.nodes if n.type == "DetectionOutput" for v in n.outputs}
    limit = verification.Tolerance(rtol=tol, atol=tol).limit
    for backend, arrays in produced.items():
        for value in values:
            mine, ref = np.asarray(arrays[value], np.float64), reference[value]
            if value in detections:
                mine, ref, _ = align_detections(mine, ref)
            assert mine.shape == ref.shape, f"{backend} {value}: {mine.shape} vs {ref.shape}"
            error = float(np.max(np.abs(mine - ref), initial=0.0))
            assert error <= limit(ref), f"{backend} {value}: {error:.3g} from the reference"


def judge_name() -> str:
    """The judge whole-net tests are named after: OpenCV 4 where installed, else float64."""
    return "opencv" if opencv_caffe_available() is None else "float64"


def judge_run(net, prototxt, weights, feeds, values) -> dict[str, np.ndarray]:
    """``values`` from the judge: OpenCV 4 reading the files (Winograd off where the caller's
    fixture turned it off), or the float64 reference on the graph (``net``: a LoadedNet or a
    Graph with weights attached)."""
    graph = getattr(net, "graph", net)
    if judge_name() == "opencv":
        from caffe_compat.verify.opencv import run_opencv_caffe

        return run_opencv_caffe(graph, prototxt, weights, feeds, list(values))
    from caffe_compat.reference import forward

    found = forward(net, feeds, outputs=list(values))
    return {v: np.asarray(found[v], dtype=np.float32) for v in values}
