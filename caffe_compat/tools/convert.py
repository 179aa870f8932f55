"""Files in, converted models out: ONNX and/or PyTorch, written atomically, with a parity check.

The PyTorch model is saved as a ``torch.export`` program (``.pt2``) with a dynamic batch axis, so it
loads with plain PyTorch (``torch.export.load(path).module()``); nets whose layers cannot be
exported that way fall back to a pickled module (``.pt``, needs caffe-compat to load).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, registry
from ..budget import Budget, footprint, resolve
from ..errors import CaffeCompatError
from ..io.atomic import atomic_output
from ..io.identity import file_identity
from ..ir.infer import batch_dependence
from ..ir.load import LoadedNet, load_net
from ..verify import Report, verify_loaded

TARGETS = ("onnx", "torch")
# Copies of each parameter while both models are built: the loaded blobs, the torch module, the
# ONNX protobuf and the bytes onnx's full check serialises it to.
BUILD_PARAM_COPIES = 4


@dataclass
class ConversionResult:
    outputs: dict[str, Path]
    timings: dict[str, float]
    report: Report | None = None
    notes: list[str] = field(default_factory=list)


def output_paths(prefix: str | os.PathLike[str], targets: Iterable[str]) -> dict[str, Path]:
    """Where each target goes: PREFIX.onnx and PREFIX.pt2."""
    prefix = Path(prefix)
    suffix = {"onnx": ".onnx", "torch": ".pt2"}
    return {t: prefix.with_name(prefix.name + suffix[t]) for t in targets}


def default_prefix(weights: str | os.PathLike[str]) -> Path:
    """The weights file's name without extension, in the current folder."""
    name = Path(weights).name
    for ext in (".caffemodel.h5", ".caffemodel", ".h5"):
        if name.endswith(ext):
            return Path(name[: -len(ext)])
    return Path(Path(weights).stem)


def source_metadata(loaded: LoadedNet) -> dict[str, str]:
    """What the ONNX file records about where it came from and how to feed it."""
    graph = loaded.graph
    meta = {
        "converter": f"caffe-compat {__version__}",
        "source_prototxt": f"{Path(loaded.prototxt_path).name} "
        + file_identity(loaded.prototxt_path).as_metadata(),
        "input_layout": json.dumps({n: ["N", *s[1:]] for n, s in graph.inputs.items()}),
        "outputs": json.dumps([graph.blob_of[v] for v in graph.outputs]),
    }
    if loaded.weights is not None:
        meta["source_weights"] = f"{Path(loaded.weights.path).name} ({loaded.weights.format}) " + (
            file_identity(loaded.weights.path).as_metadata()
        )
    return meta


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """torch.export logs whole graphs when it gives up; the fallback makes that noise."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _save_torch(model: Any, graph_inputs: Mapping, path: Path, notes: list[str]) -> Path:
    """torch.export with a dynamic batch; a pickled module if the net cannot be exported."""
    import torch

    examples = tuple(torch.zeros((2, *s[1:])) for s in graph_inputs.values())
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with _quiet_torch_logs():
            program = torch.export.export(
                model, examples, dynamic_shapes=(tuple({0: batch} for _ in examples),)
            )
    except Exception as exc:  # torch.export raises many types; the fallback is always valid
        fallback = path.with_suffix(".pt")
        notes.append(f"torch.export failed ({type(exc).__name__}); saved a pickled module instead")
        with atomic_output(fallback) as tmp:
            torch.save(model, tmp)
        return fallback
    with atomic_output(path) as tmp:
        torch.export.save(program, str(tmp))
    return path


def convert(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    *,
    out_prefix: str | os.PathLike[str] | None = None,
    targets: Iterable[str] = TARGETS,
    force: bool = False,
    optimize: bool = False,
    check: bool = True,
    check_batch: int = 4,
    metadata: Mapping[str, str] | None = None,
    max_memory: Budget | int | str | None = None,
    **net_options: Any,
) -> ConversionResult:
    """Convert a Caffe net; nothing is written unless every step before the writes succeeded.

    ``max_memory`` bounds the models' building and the check (whose batch shrinks to fit); the
    default is half the available memory (``budget.py``)."""
    targets = list(dict.fromkeys(targets))
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise CaffeCompatError(f"--to takes {', '.join(TARGETS)}; got {', '.join(targets)}")
    paths = output_paths(out_prefix or default_prefix(weights), targets)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise CaffeCompatError(f"refusing to overwrite {', '.join(existing)} (pass --force)")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    loaded = load_net(prototxt, weights, **net_options)
    timings["read"] = time.perf_counter() - start
    mark = time.perf_counter()
    registry.preflight(loaded.graph, targets)  # first use imports torch and onnx
    timings["preflight"] = time.perf_counter() - mark
    budget = resolve(max_memory)
    need = footprint(loaded.graph, loaded.inference.params)
    budget.require(BUILD_PARAM_COPIES * need.params, "building the PyTorch and ONNX models")
    graph = loaded.graph
    if optimize:
        from ..passes import optimize as optimize_graph

        graph = optimize_graph(graph)
        loaded.graph = graph

    from ..converters.onnx.export import check_model, save_onnx, to_onnx
    from ..converters.torch.model import CaffeNet

    torch_model = None
    if "torch" in paths:
        mark = time.perf_counter()
        torch_model = CaffeNet(graph)
        timings["build_torch"] = time.perf_counter() - mark
    mark = time.perf_counter()
    onnx_model = to_onnx(
        graph,
        metadata={**source_metadata(loaded), **(metadata or {})},
        dynamic_batch=batch_dependence(graph) is None,  # else only the declared batch computes
    )
    check_model(onnx_model)
    timings["build_onnx"] = time.perf_counter() - mark

    result = ConversionResult(outputs={}, timings=timings)
    if check:
        mark = time.perf_counter()
        result.report = verify_loaded(
            loaded,
            weights_path=str(weights),
            batch=check_batch,
            onnx_model=onnx_model.SerializeToString(),
            devices=("cpu",),
            require_reference=False,
            max_memory=budget,
        )
        timings["check"] = time.perf_counter() - mark
        worst = max((c.max_abs for c in result.report.comparisons), default=0.0)
        entry = onnx_model.metadata_props.add()
        entry.key = "parity_at_export"
        entry.value = (
            f"{'pass' if result.report.passed else 'FAIL'}; max abs error {worst:.3g} over "
            f"{len(result.report.comparisons)} blob comparisons, batch {result.report.batch}, "
            f"references: {', '.join(result.report.references)}"
        )
    mark = time.perf_counter()
    if "onnx" in paths:
        save_onnx(onnx_model, paths["onnx"])
        result.outputs["onnx"] = paths["onnx"]
    if "torch" in paths:
        result.outputs["torch"] = _save_torch(
            torch_model, graph.inputs, paths["torch"], result.notes
        )
    timings["write"] = time.perf_counter() - mark
    return result
