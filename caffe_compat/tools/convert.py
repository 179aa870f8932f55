"""Files in, converted models out: ONNX and/or PyTorch, written atomically, with a parity check.

Targets: ``onnx`` (``.onnx``); ``torch``, a ``torch.export`` program (``.pt2``) with a dynamic
batch axis that loads with plain PyTorch (``torch.export.load(path).module()``); and
``torch-weights`` (``.safetensors``), the Caffe blobs and the net definition with no pickle in
it, loaded by ``caffe_compat.load_torch`` (see ``torch_weights``). A net that ``torch.export``
cannot trace gets the torch-weights file instead of the ``.pt2``; nothing written here is a
pickle. The outputs of one run are written as a set (all replaced or none) and each records the
same source identities and conversion id (``provenance``), so a mismatched pair is detectable.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, registry
from ..errors import CaffeCompatError
from ..io.atomic import atomic_outputs, remove_stale_partials
from ..io.identity import file_identity
from ..ir.load import LoadedNet, load_net
from ..verify import Report, verify_loaded
from .provenance import KEYS as PROVENANCE_KEYS
from .provenance import PT2_ENTRY
from .torch_weights import save_torch_weights

TARGETS = ("onnx", "torch", "torch-weights")
DEFAULT_TARGETS = ("onnx", "torch")
SUFFIXES = {"onnx": ".onnx", "torch": ".pt2", "torch-weights": ".safetensors"}
_BACKEND = {"onnx": "onnx", "torch": "torch", "torch-weights": "torch"}


@dataclass
class ConversionResult:
    outputs: dict[str, Path]
    timings: dict[str, float]
    report: Report | None = None
    notes: list[str] = field(default_factory=list)


def output_paths(prefix: str | os.PathLike[str], targets: Iterable[str]) -> dict[str, Path]:
    """Where each target goes: PREFIX.onnx, PREFIX.pt2, PREFIX.safetensors."""
    prefix = Path(prefix)
    return {t: prefix.with_name(prefix.name + SUFFIXES[t]) for t in targets}


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


def _export_torch(model: Any, graph_inputs: Mapping) -> tuple[Any, str | None]:
    """torch.export with a dynamic batch: (program, None), or (None, why) when it cannot."""
    import torch

    examples = tuple(torch.zeros((2, *s[1:])) for s in graph_inputs.values())
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with _quiet_torch_logs():
            program = torch.export.export(
                model, examples, dynamic_shapes=(tuple({0: batch} for _ in examples),)
            )
    except Exception as exc:  # torch.export raises many types; the fallback is always valid
        return None, type(exc).__name__
    return program, None


def convert(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    *,
    out_prefix: str | os.PathLike[str] | None = None,
    targets: Iterable[str] = DEFAULT_TARGETS,
    force: bool = False,
    optimize: bool = False,
    check: bool = True,
    check_batch: int = 4,
    metadata: Mapping[str, str] | None = None,
    **net_options: Any,
) -> ConversionResult:
    """Convert a Caffe net; nothing is written unless every step before the writes succeeded."""
    targets = list(dict.fromkeys(targets))
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise CaffeCompatError(f"--to takes {', '.join(TARGETS)}; got {', '.join(targets)}")
    prefix = out_prefix or default_prefix(weights)
    paths = output_paths(prefix, targets)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise CaffeCompatError(f"refusing to overwrite {', '.join(existing)} (pass --force)")
    for path in output_paths(prefix, TARGETS).values():
        if path.parent.is_dir():
            remove_stale_partials(path)  # left by an interrupted run
    timings: dict[str, float] = {}
    start = time.perf_counter()
    loaded = load_net(prototxt, weights, **net_options)
    timings["read"] = time.perf_counter() - start
    mark = time.perf_counter()
    # first use imports torch and onnx
    registry.preflight(loaded.graph, list(dict.fromkeys(_BACKEND[t] for t in targets)))
    timings["preflight"] = time.perf_counter() - mark
    graph = loaded.graph
    # The caffemodel's blobs, before --optimize folds them: what a torch-weights file holds.
    caffe_blobs = {node.name: list(node.blobs) for node in graph.nodes if node.blobs}
    if optimize:
        from ..passes import optimize as optimize_graph

        graph = optimize_graph(graph)
        loaded.graph = graph

    from ..converters.onnx.export import check_model, to_onnx
    from ..converters.torch.model import CaffeNet

    torch_model = None
    if "torch" in paths:  # torch-weights needs no module: it is the blobs and the definition
        mark = time.perf_counter()
        torch_model = CaffeNet(graph)
        timings["build_torch"] = time.perf_counter() - mark
    mark = time.perf_counter()
    sources = source_metadata(loaded)
    provenance = {k: sources[k] for k in PROVENANCE_KEYS if k in sources}
    provenance["conversion"] = uuid.uuid4().hex
    onnx_model = to_onnx(graph, metadata={**sources, **provenance, **(metadata or {})})
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
        )
        timings["check"] = time.perf_counter() - mark
        worst = max((c.max_abs for c in result.report.comparisons), default=0.0)
        entry = onnx_model.metadata_props.add()
        entry.key = "parity_at_export"
        entry.value = (
            f"{'pass' if result.report.passed else 'FAIL'}; max abs error {worst:.3g} over "
            f"{len(result.report.comparisons)} blob comparisons, batch {check_batch}, "
            f"references: {', '.join(result.report.references)}"
        )
    mark = time.perf_counter()
    program = None
    plan = dict(paths)  # target -> file
    if "torch" in paths:
        program, failure = _export_torch(torch_model, graph.inputs)
        if program is None:
            plan["torch"] = paths["torch"].with_suffix(SUFFIXES["torch-weights"])
            result.notes.append(
                f"torch.export failed ({failure}); wrote the pickle-free torch-weights file "
                f"{plan['torch']} instead (load it with caffe_compat.load_torch)"
            )
    kinds: dict[Path, str] = {}  # file -> what goes in it (the fallback may be requested too)
    for target, path in plan.items():
        kinds.setdefault(path, "torch-weights" if target == "torch" and program is None else target)
    with atomic_outputs(list(kinds), overwrite=force) as temps:
        for kind, tmp in zip(kinds.values(), temps):
            if kind == "onnx":
                import onnx

                onnx.save_model(onnx_model, str(tmp))
            elif kind == "torch":
                import torch

                extra = {PT2_ENTRY: json.dumps(provenance)}
                torch.export.save(program, str(tmp), extra_files=extra)
            else:
                save_torch_weights(
                    tmp,
                    loaded,
                    caffe_blobs,
                    options=net_options,
                    optimize=optimize,
                    provenance=provenance,
                )
    result.outputs.update(plan)
    timings["write"] = time.perf_counter() - mark
    return result
