"""Files in, converted models out: ONNX and/or PyTorch, written atomically, with a parity check.

Targets: ``onnx`` (``.onnx``); ``torch``, a ``torch.export`` program (``.pt2``) with a dynamic
batch axis that loads with plain PyTorch (``torch.export.load(path).module()``); and
``torch-weights`` (``.safetensors``), the Caffe blobs and the net definition with no pickle in
it, loaded by ``caffe_compat.load_torch`` (see ``torch_weights``). A net that ``torch.export``
cannot trace gets the torch-weights file instead of the ``.pt2``; nothing written here is a
pickle. The outputs of one run are written as a set (all replaced or none) and each records the
same source identities and conversion id (``provenance``), so a mismatched pair is detectable.

Asking for ONNX alone never imports torch (3.7 s per process on a 2-core machine): the registry
preflight, the export and the quick check (ONNX Runtime against the independent judges: the
float64 reference, OpenCV 4 where installed) are all torch-free.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, registry
from ..budget import Budget, footprint, resolve
from ..converters.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from ..errors import CaffeCompatError, MemoryBudgetError, Remedy, UnsupportedLayersError
from ..io.atomic import atomic_outputs, check_target, remove_stale_partials
from ..io.identity import file_identity
from ..ir.infer import batch_dependence
from ..ir.load import LoadedNet, fork_notes, load_net
from ..progress import Progress
from ..verify import Report, verify_loaded
from .provenance import KEYS as PROVENANCE_KEYS
from .provenance import PT2_ENTRY
from .quiet_export import quiet_torch_export
from .torch_weights import save_torch_weights

TARGETS = ("onnx", "torch", "torch-weights")
DEFAULT_TARGETS = ("onnx", "torch")
SUFFIXES = {"onnx": ".onnx", "torch": ".pt2", "torch-weights": ".safetensors"}
_BACKEND = {"onnx": "onnx", "torch": "torch", "torch-weights": "torch"}
log = logging.getLogger(__name__)
# Copies of each parameter at the build's peak: the loaded blobs, the ONNX pieces and the bytes
# they are joined into (``to_onnx_bytes``; the torch module is built after the check).
BUILD_PARAM_COPIES = 3


@dataclass
class ConversionResult:
    outputs: dict[str, Path]
    timings: dict[str, float]
    report: Report | None = None
    notes: list[str] = field(default_factory=list)


def output_paths(prefix: str | os.PathLike[str], targets: Iterable[str]) -> dict[str, Path]:
    """Where each target goes: PREFIX.onnx, PREFIX.pt2, PREFIX.safetensors. A prefix that
    already ends in one of these suffixes loses it (``-o age.onnx`` writes age.onnx)."""
    prefix = Path(prefix)
    for suffix in SUFFIXES.values():
        if prefix.name.endswith(suffix) and len(prefix.name) > len(suffix):
            prefix = prefix.with_name(prefix.name[: -len(suffix)])
            break
    return {t: prefix.with_name(prefix.name + SUFFIXES[t]) for t in targets}


def check_opset(opset: int) -> int:
    """``opset`` when this converter writes it, else one error naming the range."""
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise CaffeCompatError(
            f"--opset takes {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET}), got {opset!r}"
        )
    return opset


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


def _export_torch(model: Any, graph_inputs: Mapping) -> tuple[Any, str | None]:
    """torch.export with a dynamic batch: (program, None), or (None, why) when it cannot."""
    import torch

    examples = tuple(torch.zeros((2, *s[1:])) for s in graph_inputs.values())
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with quiet_torch_export():
            program = torch.export.export(
                model, examples, dynamic_shapes=(tuple({0: batch} for _ in examples),)
            )
    except Exception as exc:  # torch.export raises many types; the fallback is always valid
        log.info("torch.export failed (%s: %s)", type(exc).__name__, exc)
        return None, type(exc).__name__
    return program, None


def _check(
    built: _Built, weights: str, batch: int, result: ConversionResult, plan: ConvertPlan
) -> None:
    """The quick parity check; its verdict goes into the ONNX metadata. Without the torch
    target, only ONNX Runtime runs, against the independent judges alone."""
    loaded, onnx_bytes = built.loaded, built.onnx_bytes
    with_torch = "torch" in plan.paths or onnx_bytes is None
    budget = plan.budget
    if onnx_bytes is None:
        result.notes.append(f"no ONNX model in the parity check ({built.no_onnx})")
    try:
        report = verify_loaded(
            loaded,
            weights_path=weights,
            batch=batch,
            onnx_model=onnx_bytes,
            devices=("cpu",),
            require_reference=False,
            backends=(("torch",) if with_torch else ()) + (("onnxruntime",) if onnx_bytes else ()),
            progress=False,
            max_memory=budget,
        )
    except MemoryBudgetError as exc:
        # Refused before it ran: the check holds the built model's bytes beside everything
        # verify holds, so a net that verify (its own process) can check may not fit here.
        # The files are still written, and the output and metadata say the check did not run.
        result.notes.append(
            f"parity check skipped: {exc.reason}; run `caffe-compat verify` on the net "
            "(it holds fewer copies)"
        )
        _record_verdict(built, "skipped: over the memory budget")
        return
    if not report.comparisons:
        judges = "; ".join(f"{k} {v}" for k, v in report.references.items() if k != "none")
        result.notes.append(
            f"parity check skipped: no independent judge ran ({judges}), and the export check "
            "against our PyTorch model needs the torch target; verify where OpenCV 4 is installed"
        )
        return
    result.report = report
    if onnx_bytes is None:
        return
    worst = max((c.max_abs for c in report.comparisons), default=0.0)
    _record_verdict(
        built,
        f"{'pass' if report.passed else 'FAIL'}; max abs error {worst:.3g} over "
        f"{len(report.comparisons)} blob comparisons, batch {report.batch}, "
        f"references: {', '.join(report.references)}",
    )


def _record_verdict(built: _Built, text: str) -> None:
    """The check's verdict as the model's ``parity_at_export`` metadata entry."""
    import onnx

    # A ModelProto holding only the entry: protobuf merges concatenated messages, so appending
    # its bytes adds the entry without a second copy of the weights (metadata_props is the last
    # field of the model itself; initializers follow as further ``graph`` fields).
    verdict = onnx.ModelProto()
    entry = verdict.metadata_props.add()
    entry.key, entry.value = "parity_at_export", text
    built.onnx_tail += verdict.SerializeToString()


@dataclass(frozen=True)
class ConvertOptions:
    """What ``convert`` is asked (see its docstring); ``net_options`` go to ``load_net``."""

    out_prefix: str | os.PathLike[str] | None = None
    targets: tuple[str, ...] = DEFAULT_TARGETS
    force: bool = False
    optimize: bool = False
    check: bool = True
    check_batch: int = 4
    metadata: Mapping[str, str] | None = None
    progress: bool = True
    max_memory: Budget | int | str | None = None
    net_options: Mapping[str, Any] = field(default_factory=dict)
    opset: int = DEFAULT_OPSET
    fp16: bool = False


@dataclass(frozen=True)
class ConvertPlan:
    """Where each target goes, the steps to take, the memory budget."""

    paths: dict[str, Path]
    steps: tuple[str, ...]
    budget: Budget


def plan_conversion(weights: str | os.PathLike[str], options: ConvertOptions) -> ConvertPlan:
    """The targets checked, their files (refused if present, unless ``force``), partial files
    of an interrupted run removed, and the steps."""
    targets = list(dict.fromkeys(options.targets))
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise CaffeCompatError(
            f"unknown target(s) {', '.join(unknown) or '(none given)'}: targets are "
            f"{', '.join(TARGETS)}"
        )
    prefix = options.out_prefix or default_prefix(weights)
    paths = output_paths(prefix, targets)
    for path in paths.values():
        check_target(path)  # a folder, device, FIFO or link there: refused before any work
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not options.force:
        raise CaffeCompatError(
            f"refusing to overwrite {', '.join(existing)}",
            remedy=Remedy("force", purpose="to overwrite them"),
        )
    for path in output_paths(prefix, TARGETS).values():
        if path.parent.is_dir():
            remove_stale_partials(path)  # left by an interrupted run
    steps = ["read", "preflight", "build_onnx", *(["check"] if options.check else [])]
    steps += [*(["build_torch"] if "torch" in paths else []), "write"]
    return ConvertPlan(paths, tuple(steps), resolve(options.max_memory))


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
    progress: bool = True,
    max_memory: Budget | int | str | None = None,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    **net_options: Any,
) -> ConversionResult:
    """Convert a Caffe net; nothing is written unless every step before the writes succeeded.

    ``progress`` draws a bar of the steps on stderr when it is a terminal. ``max_memory`` bounds
    the models' building and the check (whose batch shrinks to fit); the default is a share of the
    available memory (``budget.py``). ``opset`` is the ONNX opset written (``MIN_OPSET`` to
    ``MAX_OPSET``); ``fp16`` stores the ONNX file's weights as float16 (``float16_weights``).
    The keywords are ``ConvertOptions``' fields."""
    options = ConvertOptions(
        out_prefix=out_prefix,
        targets=tuple(targets),
        force=force,
        optimize=optimize,
        check=check,
        check_batch=check_batch,
        metadata=metadata,
        progress=progress,
        max_memory=max_memory,
        net_options=net_options,
        opset=check_opset(opset),
        fp16=fp16,
    )
    plan = plan_conversion(weights, options)
    with Progress(len(plan.steps), label="convert", unit="steps", enabled=progress) as bar:
        steps = _Steps(bar)
        built = _build(prototxt, weights, plan, options, steps)
        result = ConversionResult(outputs={}, timings=steps.timings)
        result.notes.extend(fork_notes(built.loaded))
        if options.check:
            steps.start("check", "parity check")
            _check(built, str(weights), check_batch, result, plan)
        _write(built, plan, options, result, steps)
        steps.start("", "")
        return result


class _Steps:
    """The step under way: its time goes into ``timings`` and the bar ticks when it ends."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.timings: dict[str, float] = {}
        self.name, self.since = "", time.perf_counter()

    def start(self, name: str, status: str) -> None:
        """Close the running step and start ``name`` (``""``: none, the end)."""
        now = time.perf_counter()
        if self.name:
            self.timings[self.name] = now - self.since
            log.info("convert: %s took %.2f s", self.name, now - self.since)
            self.bar.update()
        self.name, self.since = name, now
        if name:
            self.bar.describe(status)


@dataclass
class _Built:
    """The models built from the files, before anything is written."""

    loaded: LoadedNet
    graph: Any
    caffe_blobs: dict[str, list[Any]]  # before --optimize folds them: what torch-weights holds
    onnx_bytes: bytes | None  # the serialised ONNX model (the protobuf itself is not kept);
    # None when no ONNX target is asked for and ONNX cannot hold the net
    provenance: dict[str, str]
    onnx_tail: bytes = b""  # metadata added after the build (the check's verdict)
    no_onnx: str | None = None  # why there is no ONNX model


def _build(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    plan: ConvertPlan,
    options: ConvertOptions,
    steps: _Steps,
) -> _Built:
    """Read, check support and memory, optimize if asked, build the torch and ONNX models."""
    steps.start("read", "reading")
    loaded = load_net(prototxt, weights, max_memory=plan.budget, **options.net_options)
    steps.start("preflight", "checking layer support")
    # imports each target's converters (torch only when a torch target is asked for)
    registry.preflight(loaded.graph, list(dict.fromkeys(_BACKEND[t] for t in plan.paths)))
    need = footprint(loaded.graph, loaded.inference.params)
    plan.budget.require(BUILD_PARAM_COPIES * need.params, "building the PyTorch and ONNX models")
    graph = loaded.graph
    caffe_blobs = {node.name: list(node.blobs) for node in graph.nodes if node.blobs}
    if options.optimize:
        from ..passes import optimize as optimize_graph

        graph = optimize_graph(graph)
        loaded.graph = graph
    from ..converters.onnx.export import to_onnx_bytes

    steps.start("build_onnx", "building the ONNX model")
    sources = source_metadata(loaded)
    provenance = {k: sources[k] for k in PROVENANCE_KEYS if k in sources}
    provenance["conversion"] = uuid.uuid4().hex
    onnx_bytes, no_onnx = None, None
    if "onnx" not in plan.paths:  # ONNX only checks the torch targets: a layer it cannot hold
        # (a Python layer's user code) leaves the check to the torch model and the judges
        try:
            registry.preflight(graph, ["onnx"])
        except UnsupportedLayersError as exc:
            no_onnx = exc.reason
    if no_onnx is None:
        onnx_bytes = to_onnx_bytes(
            graph,
            opset=options.opset,
            metadata={**sources, **provenance, **(options.metadata or {})},
            dynamic_batch=batch_dependence(graph) is None,  # else only the declared batch computes
        )
    return _Built(loaded, graph, caffe_blobs, onnx_bytes, provenance, no_onnx=no_onnx)


def _write(
    built: _Built,
    plan: ConvertPlan,
    options: ConvertOptions,
    result: ConversionResult,
    steps: _Steps,
) -> None:
    """Every target file, all replaced or none; a torch target ``torch.export`` cannot trace
    becomes the torch-weights file."""
    bar = steps.bar
    program = None
    files = dict(plan.paths)  # target -> file
    if "torch" in plan.paths:  # torch-weights needs no module: it is the blobs and the definition
        from ..converters.torch.model import CaffeNet

        steps.start("build_torch", "building the PyTorch model")
        torch_model = CaffeNet(built.graph)  # built after the check, which builds its own
        steps.start("write", "writing")
        bar.describe("torch.export")
        program, failure = _export_torch(torch_model, built.graph.inputs)
        if program is None:
            files["torch"] = plan.paths["torch"].with_suffix(SUFFIXES["torch-weights"])
            result.notes.append(
                f"torch.export failed ({failure}); wrote the pickle-free torch-weights file "
                f"{files['torch']} instead (load it with caffe_compat.load_torch)"
            )
    else:
        steps.start("write", "writing")
    kinds: dict[Path, str] = {}  # file -> what goes in it (the fallback may be requested too)
    for target, path in files.items():
        kinds.setdefault(path, "torch-weights" if target == "torch" and program is None else target)
    pieces = [built.onnx_bytes or b"", built.onnx_tail]  # written one by one: no joined copy
    if options.fp16 and "onnx" in kinds.values():
        import onnx

        model = onnx.load_from_string(b"".join(pieces))
        pieces = [_half(model, result).SerializeToString()]
    with atomic_outputs(list(kinds), overwrite=options.force) as temps:
        for kind, tmp in zip(kinds.values(), temps):
            if kind == "onnx":
                with open(tmp, "wb") as out:
                    for piece in pieces:
                        out.write(piece)
            elif kind == "torch":
                import torch

                extra = {PT2_ENTRY: json.dumps(built.provenance)}
                torch.export.save(program, str(tmp), extra_files=extra)
            else:
                save_torch_weights(
                    tmp,
                    built.loaded,
                    built.caffe_blobs,
                    options=dict(options.net_options),
                    optimize=options.optimize,
                    provenance=built.provenance,
                )
    result.outputs.update(files)


def _half(model: Any, result: ConversionResult) -> Any:
    """The ONNX model with float16 weights, and a note with the sizes and how far its outputs
    move from the float32 model's on one synthetic input (ONNX Runtime, both)."""
    import numpy as np
    import onnxruntime as ort

    from ..converters.onnx.export import float16_weights
    from ..verify.inputs import feeds_for

    half, count = float16_weights(model)
    before, after = len(model.SerializeToString()), len(half.SerializeToString())
    shapes = {
        i.name: tuple(d.dim_value or 1 for d in i.type.tensor_type.shape.dim)
        for i in model.graph.input
    }
    feeds = feeds_for(shapes, 1, seed=3)
    outputs = []
    for candidate in (model, half):
        session = ort.InferenceSession(
            candidate.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        outputs.append(session.run(None, feeds))
    moved = max((float(np.abs(a - b).max()) for a, b in zip(*outputs) if a.size), default=0.0)
    result.notes.append(
        f"--fp16: {count} weights stored as float16: ONNX file {before / 2**20:.1f} MiB -> "
        f"{after / 2**20:.1f} MiB; outputs move by at most {moved:.2g} (max abs) from the "
        "float32 weights' on a synthetic input (the parity check ran on float32 weights)"
    )
    return half
