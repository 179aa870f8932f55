"""What is in a model: layers, wiring, shapes by Caffe's rules, parameters, and every mismatch.

Builds a plain dict (``--json`` prints it as is) and a text rendering of it. Works from a prototxt,
a prototxt plus weights, or weights alone. Shapes are lists of ints (``[]`` for a scalar, ``null``
when Caffe's rules could not tell); the text rendering writes them as ``1x96x56x56``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_weights
from ..io.weights import Weights
from ..ir.graph import Shape
from ..ir.load import fork_notes, load_net
from ..printable import printable


def _dims(shape: Shape | None) -> list[int] | None:
    """A shape for JSON: a list of ints, or None when unknown."""
    return None if shape is None else [int(d) for d in shape]


def _text(shape: list[int] | None) -> str:
    """A shape for people: ``1x96x56x56``, ``scalar`` or ``?``."""
    if shape is None:
        return "?"
    return "x".join(str(d) for d in shape) if shape else "scalar"


def inspect_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Report on a weights file alone: stored layers, their types and blob shapes."""
    weights = read_weights(path)
    return {
        "weights": _weights_summary(weights),
        "layers": [
            {
                "name": name,
                "type": weights.layer_type(name),
                "params": [_dims(tuple(a.shape)) for a in arrays],
                "param_count": sum(int(a.size) for a in arrays),
            }
            for name, arrays in weights.blobs.items()
        ],
        "issues": [],
    }


def _weights_summary(weights: Weights) -> dict[str, Any]:
    return {
        "path": weights.path,
        "format": weights.format,
        "layers_with_blobs": sum(1 for a in weights.blobs.values() if a),
        "param_count": weights.parameter_count,
        "duplicate_layer_names": weights.duplicates,
    }


def inspect_net(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Report on a net definition, optionally checked against weights (lenient: never raises on
    shape problems or mismatches; they are listed under ``issues``)."""
    loaded = load_net(prototxt, weights, strict=False, **options)
    graph, inference = loaded.graph, loaded.inference
    layers = []
    for node in graph.nodes:
        expected = inference.params.get(node.name)
        layers.append(
            {
                "name": node.name,
                "type": node.type,
                "bottoms": node.bottoms,
                "tops": node.tops,
                "in_place": bool(set(node.bottoms) & set(node.tops)),
                "outputs": [_dims(inference.shapes.get(v)) for v in node.outputs],
                "params": [_dims(s) for s in expected] if expected is not None else None,
                "param_count": sum(_count(s) for s in expected) if expected else 0,
                "line": node.line,
            }
        )
    report: dict[str, Any] = {
        "prototxt": {"path": str(prototxt), "format": loaded.prototxt_format, "name": graph.name},
        "phase": options.get("phase", "TEST"),
        "inputs": {n: _dims(s) for n, s in graph.inputs.items()},
        "outputs": {graph.blob_of[v]: _dims(inference.shapes.get(v)) for v in graph.outputs},
        "layers": layers,
        "dropped": [{"name": n, "type": t} for n, t in graph.dropped],
        "param_count": sum(layer["param_count"] for layer in layers),
        "notes": [*graph.notes, *fork_notes(loaded)],
        "issues": [{"layer": i.layer, "kind": i.kind, "detail": i.detail} for i in loaded.issues],
    }
    if loaded.weights is not None:
        report["weights"] = _weights_summary(loaded.weights)
    return report


def _count(shape: Shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def render(report: Mapping[str, Any]) -> str:
    """Human-readable text of a report; every line escaped (``printable``), since names come
    from files."""
    lines: list[str] = []
    proto = report.get("prototxt")
    if proto:
        lines.append(f"net        {proto['name'] or '(unnamed)'}  [{proto['path']}]")
        lines.append(f"format     {proto['format']} prototxt, phase {report['phase']}")
    weights = report.get("weights")
    if weights:
        lines.append(
            f"weights    {weights['path']}  [{weights['format']}, "
            f"{weights['param_count']:,} values in {weights['layers_with_blobs']} layers]"
        )
    if "inputs" in report:
        for key in ("inputs", "outputs"):
            shapes = ", ".join(f"{n} {_text(s)}" for n, s in report[key].items())
            lines.append(f"{key:<11}{shapes}")
    lines.append("")
    rows = [("layer", "type", "bottoms -> tops", "output", "params")]
    for layer in report["layers"]:
        wiring = ""
        if "bottoms" in layer:
            wiring = f"{','.join(layer['bottoms']) or '-'} -> {','.join(layer['tops'])}"
        output = " ".join(_text(s) for s in layer.get("outputs", []))
        params = layer.get("params")
        params = "?" if params is None else " ".join(_text(s) for s in params)
        rows.append(tuple(map(printable, (layer["name"], layer["type"], wiring, output, params))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4])
    lines.append("")
    lines.append(f"parameters {report.get('param_count', 0):,}")
    for dropped in report.get("dropped", []):
        lines.append(f"dropped    {dropped['name']} ({dropped['type']}): not part of inference")
    for note in report.get("notes", []):
        lines.append(f"note       {note}")
    issues = report.get("issues", [])
    if issues:
        lines.append(f"PROBLEMS   {len(issues)}")
        for issue in issues:
            lines.append(f'  {issue["kind"]:<10} layer "{issue["layer"]}": {issue["detail"]}')
    else:
        lines.append("problems   none" + (" (net and weights agree)" if weights else ""))
    return "\n".join(map(printable, lines))  # names from files: never raw control characters


def looks_like_weights(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a binary or HDF5 file rather than a prototxt."""
    from ..io.sniff import Kind, sniff

    try:
        with Path(path).open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return sniff(head) in (Kind.BINARY, Kind.HDF5)


def inspect_blobproto(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Report on a BlobProto file (a ``mean.binaryproto``): its shape and per-channel means,
    the numbers ``blobFromImage`` takes; None when the file is not a single BlobProto."""
    from ..errors import CaffeCompatError
    from ..io.binaryproto import read_blobproto

    try:
        array = read_blobproto(path, "binaryproto mean image")
    except CaffeCompatError:
        return None
    image = array[0] if array.ndim == 4 and array.shape[0] == 1 else array
    channels = image.reshape(image.shape[0], -1) if image.ndim == 3 else image.reshape(1, -1)
    means = [float(c.mean(dtype=np.float64)) for c in channels]
    return {
        "blobproto": {
            "path": str(path),
            "shape": _dims(tuple(array.shape)),
            "channel_means": means,
            "min": float(array.min()) if array.size else None,
            "max": float(array.max()) if array.size else None,
        },
        "issues": [],
    }


def render_blobproto(report: dict[str, Any]) -> str:
    """The BlobProto report as lines; the means in the order stored (BGR for Caffe's)."""
    blob = report["blobproto"]
    means = ", ".join(f"{m:.4f}" for m in blob["channel_means"])
    shape = blob["shape"]
    lines = [
        f"file       {blob['path']}",
        "format     BlobProto (a mean image, binaryproto)",
        f"shape      {shape}",
        f"values     {blob['min']:.4g} to {blob['max']:.4g}",
        f"means      per channel, as stored (BGR for a Caffe mean): {means}",
    ]
    if len(blob["channel_means"]) == 3 and len(shape) >= 2:
        height, width = shape[-2], shape[-1]
        lines.append(
            f"use        cv2.dnn.blobFromImage(image, 1.0, (W, H), ({means}), swapRB=False) "
            f"(the mean image is {width} x {height}; nets crop their own input size)"
        )
    return "\n".join(map(printable, lines))
