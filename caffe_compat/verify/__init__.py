"""``verify``: run one net through OpenCV's Caffe reader (and/or stored reference arrays), our
PyTorch module on CPU and CUDA, and our ONNX model in ONNX Runtime, and compare every blob."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..errors import CaffeCompatError
from ..inputs import feeds_for
from ..load import LoadedNet, load_net
from .compare import ArgmaxAgreement, Report, Tolerance, compare
from .runners import (
    deploy_prototxt,
    onnxruntime_cuda_available,
    opencv_caffe_available,
    opencv_known_deviations,
    run_onnxruntime,
    run_opencv_caffe,
    run_torch,
    temp_folder,
    write_temp_caffemodel,
)

__all__ = ["Report", "Tolerance", "verify", "verify_loaded"]


def _load_reference_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise CaffeCompatError(f"not a readable .npz of arrays ({exc})", path=str(path)) from None


def _argmax_rows(array: np.ndarray) -> np.ndarray | None:
    """Predicted class per sample for (N, K) or (N, K, 1, 1) outputs; None for other shapes."""
    if array.ndim >= 2 and all(d == 1 for d in array.shape[2:]) and array.shape[1] > 1:
        return array.reshape(array.shape[0], array.shape[1]).argmax(axis=1)
    return None


def verify_loaded(
    loaded: LoadedNet,
    *,
    weights_path: str | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    batch: int = 20,
    seed: int = 0,
    mean: tuple[float, ...] | None = None,
    reference: Mapping[str, np.ndarray] | None = None,
    onnx_model: bytes | None = None,
    tolerance: Tolerance | None = None,
    devices: Iterable[str] = ("cpu", "cuda"),
    opencv: bool = True,
    inputs_label: str | None = None,
    require_reference: bool = True,
) -> Report:
    """Compare every shared blob between our back ends and the independent references.

    Without any independent reference, ``require_reference=False`` (convert's quick check)
    compares ONNX Runtime with our PyTorch model instead of failing: an export check, said so
    in the report, not a proof of parity with Caffe."""
    graph = loaded.graph
    tolerance = tolerance or Tolerance()
    if reference is not None and feeds is None and all(n in reference for n in graph.inputs):
        feeds = {n: reference[n] for n in graph.inputs}
        inputs_label = inputs_label or "the reference file's own inputs"
    if feeds is None:
        feeds = feeds_for(graph.inputs, batch, seed=seed, mean=mean)
        inputs_label = inputs_label or f"{batch} synthetic images (seed {seed}), mean subtracted"
    n = next(iter(feeds.values())).shape[0]
    report = Report(inputs=inputs_label or "given arrays", batch=n)
    values = [v for v in graph.values if v not in graph.inputs]

    refs: dict[str, dict[str, np.ndarray]] = {}
    if reference is not None:
        refs["stored"] = {graph.final[b]: a for b, a in reference.items() if b in graph.final}
        refs["stored"] = {v: a for v, a in refs["stored"].items() if v not in graph.inputs}
        report.references["stored"] = f"{len(refs['stored'])} blobs from the reference file"
    why_not = opencv_caffe_available() if opencv else "disabled"
    if why_not is None:
        with temp_folder() as tmp:
            model_path = weights_path
            # OpenCV reads neither HDF5 weights nor the blobs of V0 binaries: give it a V2 copy.
            unreadable = ("hdf5", "caffemodel-v0")
            if model_path is None or (loaded.weights and loaded.weights.format in unreadable):
                model_path = str(write_temp_caffemodel(graph, loaded.net, Path(tmp)))
            prototxt, rewritten = deploy_prototxt(loaded, Path(tmp))
            import cv2

            try:
                refs["opencv"] = run_opencv_caffe(graph, prototxt, model_path, feeds, values)
            except cv2.error as exc:
                lines = [line for line in str(exc).splitlines() if line.strip()]
                why_not = f"OpenCV {cv2.__version__} cannot run this net ({lines[-1].strip()})"
        if why_not is None:
            report.references["opencv"] = f"OpenCV {cv2.__version__} readNetFromCaffe, same files"
            if rewritten:
                report.references["opencv"] += f" ({rewritten})"
            for value, why in opencv_known_deviations(graph).items():
                if refs["opencv"].pop(value, None) is not None:
                    report.skipped_values[f"{value} (opencv)"] = why
    if why_not is not None:
        report.references["opencv"] = f"skipped: {why_not}"
    import torch

    if not refs:
        if require_reference:
            raise CaffeCompatError(
                "no independent reference: install opencv-python-headless<5 or pass --reference"
            )
        refs["torch-cpu"] = run_torch(graph, feeds, values)
        report.references["torch-cpu"] = (
            "our own PyTorch model (not independent: an export check only)"
        )
        devices = [d for d in devices if d != "cpu"]

    ours: dict[str, dict[str, np.ndarray]] = {}

    for device in devices:
        name = f"torch-{device}"
        if device == "cuda" and not torch.cuda.is_available():
            report.backends[name] = "skipped: no CUDA device"
            continue
        ours[name] = run_torch(graph, feeds, values, device)
        report.backends[name] = "ran"
    if onnx_model is None:
        from ..converters.onnx.export import to_onnx

        onnx_model = to_onnx(graph, extra_outputs=values).SerializeToString()
    ours["onnxruntime-cpu"] = run_onnxruntime(onnx_model, feeds)
    report.backends["onnxruntime-cpu"] = "ran"
    if "cuda" in devices:
        if onnxruntime_cuda_available():
            ours["onnxruntime-cuda"] = run_onnxruntime(onnx_model, feeds, "CUDAExecutionProvider")
            report.backends["onnxruntime-cuda"] = "ran"
        else:
            report.backends["onnxruntime-cuda"] = "skipped: no CUDA execution provider"

    from ..detection_post import align_detections

    detections = {v for n in graph.nodes if n.type == "DetectionOutput" for v in n.outputs}
    for backend, produced in ours.items():
        for ref_name, ref_values in refs.items():
            for value in values:
                if value in produced and value in ref_values:
                    mine, theirs = produced[value], ref_values[value]
                    if value in detections:
                        mine, theirs = align_detections(mine, theirs)
                    report.comparisons.append(
                        compare(
                            value, graph.blob_of[value], mine, theirs, backend, ref_name, tolerance
                        )
                    )
            for output in graph.outputs:
                if output in produced and output in ref_values:
                    mine, theirs = _argmax_rows(produced[output]), _argmax_rows(ref_values[output])
                    if mine is not None and theirs is not None and mine.shape == theirs.shape:
                        report.argmax.append(
                            ArgmaxAgreement(
                                output, backend, ref_name, int((mine == theirs).sum()), len(mine)
                            )
                        )
    for output in graph.outputs:
        first = next((p[output] for p in ours.values() if output in p), None)
        rows = _argmax_rows(first) if first is not None else None
        if rows is not None:
            report.distinct_classes[output] = len(set(rows.tolist()))
    return report


def verify(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    *,
    onnx_path: str | os.PathLike[str] | None = None,
    reference_path: str | os.PathLike[str] | None = None,
    **options: object,
) -> Report:
    """Load the files and run :func:`verify_loaded`."""
    net_keys = ("phase", "stages", "level", "input_shapes", "allow_unknown_fields")
    net_options = {k: options.pop(k) for k in net_keys if k in options}
    loaded = load_net(prototxt, weights, **net_options)  # type: ignore[arg-type]
    reference = _load_reference_npz(reference_path) if reference_path else None
    onnx_model = Path(onnx_path).read_bytes() if onnx_path else None
    return verify_loaded(
        loaded,
        weights_path=str(weights),
        reference=reference,
        onnx_model=onnx_model,
        **options,  # type: ignore[arg-type]
    )
