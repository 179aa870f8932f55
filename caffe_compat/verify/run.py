"""``verify_loaded``: judges and back ends on the same inputs, then every shared blob compared.

The report names the exact bytes each side read (``Report.sources``: size, SHA-256 and git blob
id of every file), because a judge may read other files than the user gave: OpenCV gets a V2 copy
of HDF5 or V0 weights and the TEST-phase deploy form of a train/val net.

Memory: the judges run first (OpenCV, then the float64 reference, whose values are then kept in
float32); each back end then runs, is compared with every judge at once and is dropped before
the next runs, so at most one back end's values are alive beside the judges'. The batch is
planned for the largest phase (``verification_phases``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import shutil
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..budget import (
    Budget,
    Footprint,
    footprint,
    format_size,
    memory_failure,
    plan_batch,
    resolve,
    value_sizes,
)
from ..errors import CaffeCompatError, MemoryBudgetError, Remedy
from ..io.identity import file_identity
from ..ir.graph import Graph, Node
from ..ir.load import LoadedNet, fork_notes, load_net
from ..progress import Progress
from ..reference.run import layer_forward
from ..shapes.detection import DetectionSettings, detection_settings
from .compare import (
    FLOAT32_JUDGES,
    ArgmaxAgreement,
    Report,
    Tolerance,
    _largest,
    accumulation_lengths,
    compare,
    error_scales,
    judge_movements,
)
from .detections import align_detections, align_row_sets
from .float64 import as_float32, float64_judge
from .inputs import feed_batch, feeds_for, index_inputs, structured_inputs
from .isolated import ChildFailed, run_isolated
from .spill import SpilledValues, magnitudes, require_disk
from .stored import load_reference_npz, stored_inputs, stored_values
from .ties import (
    TIE_ROUNDS,
    has_choices,
    near_tie_classes,
    near_tie_masks,
    recomputed_rows,
    row_sources,
)

Values = dict[str, np.ndarray]
Judged = Mapping[str, np.ndarray]  # a judge's values: in memory, or on disk (SpilledValues)
REBUILDS = ("torch", "onnxruntime")  # the rebuilt models verify runs, by report name
log = logging.getLogger(__name__)
# What a verification holds at once, by phase (copies of every parameter, of the largest
# layer's parameters, of every value; see ``verification_phases``). Measured on VGG-16 (528 MB of
# weights, 392 MB in fc6, 110 MB of values per image) under a 4 GiB RLIMIT_AS, peak address
# space per phase at batch 1 and 2 (the difference is one image's values): OpenCV's judge, run
# first, adds 2.6 copies of the weights and 3 of the values (its net keeps every blob while we
# copy out its outputs); writing the ONNX model adds the initializers (one copy) and part of
# the largest once more while it is written; opening the runtime's session on that file (its
# weights in a file beside it, ONNX external data) one, and the largest once more while it is
# read (a whole-protobuf model would be parsed first: two); a back end running adds one copy
# of the values beside the judges' (torch's outputs; ONNX Runtime's tensors, copied out one at
# a time, see ``run_all_lean``). The float64 judge keeps its values in float32 once it is done
# (``as_float32``).
OPENCV_PARAM_COPIES = 3  # the loaded blobs, OpenCV's parsed caffemodel and its blobs
OPENCV_VALUE_COPIES = 3  # OpenCV's blobs, its outputs and our copies of them
# Asked for the net's outputs only, OpenCV reuses its blobs: one copy of every value bounds it
# (measured 0.3 on a 13-convolution VGG-style net at 448 x 448: 129 MB beside 427 MB of values).
OPENCV_OUTPUTS_VALUE_COPIES = 1
RUN_PARAM_COPIES = 2  # the loaded blobs and the model (torch module, ONNX initializers, session)
BACKEND_VALUE_COPIES = 1  # the running back end's values


@dataclass(frozen=True)
class Phase:
    """One step of a verification and what it holds at its peak."""

    what: str
    params: float  # copies of every parameter
    largest: float  # copies more of the largest layer's parameters (serialised, parsed)
    values: int  # copies of every value, the judges' kept values included
    scratch: float  # copies of the largest layer's scratch (im2col columns)
    before: tuple[str, ...] = ()  # libraries not imported yet while it runs
    tops: float = 0.0  # copies of the largest top, per item (the float64 judge's temporaries)
    live: bool = False  # ``values`` counts the live values of a forward, not every value
    backend: bool = False  # a back end's run: in streamed mode, a group of values beside it


def _phase_bytes(phase: Phase, need: Footprint, batch: int) -> float:
    """What ``phase`` holds at ``batch`` (``plan_batch``'s sum)."""
    values = need.streaming() if phase.live else need
    scratch = phase.scratch * need.scratch_per_item + phase.tops * need.largest_per_item
    fixed = phase.params * need.params + phase.largest * need.largest_params
    copies = max(phase.values, 1)
    return fixed + copies * values.fixed + batch * (copies * values.per_item + scratch)


def verification_phases(
    judges: Iterable[str],
    backends: Iterable[str],
    *,
    opencv: bool,
    stored: bool,
    given_model: bool,
    opencv_scope: str = "every value",
    streamed: bool = False,
    judge_weights: float = 2.0,
) -> list[Phase]:
    """The phases of a verification and what each holds at its peak: the judges' kept values
    (the float64 judge's in float32, OpenCV's, stored arrays) plus one step's own. Back ends
    run one at a time, each dropped before the next (``verify_loaded``), so the peak is the
    largest phase, not the sum. ``given_model``: the caller holds an exported model's bytes
    throughout (convert's check), one copy of the weights more in every phase.
    ``opencv_scope`` (OPENCV_SCOPES): what OpenCV is asked for; its net outputs alone are not
    counted among the kept values. ``streamed``: the float64 judge's values go to disk as they
    are computed (verify/spill.py) and each back end runs once per group of values, so a phase
    holds the live values of its forward (``Phase.live``) and a back end a group beside them
    (planned in ``_fit_batch``). ``judge_weights``: copies more of the largest layer's weights
    the float64 judge makes (2: its float64 copy; 0 where that layer's type is read in float32
    slabs, the ``float32_weights`` fact)."""
    given = 1 if given_model else 0
    with_opencv = opencv and "opencv" in judges and opencv_scope != "none"
    every = with_opencv and opencv_scope == "every value"
    kept = ("float64" in judges) + every + stored
    early = ("torch", "onnxruntime")  # the judges run before the back ends load
    running = kept + BACKEND_VALUE_COPIES
    if streamed:  # the judge's values on disk (stored arrays are refused in this mode)
        kept, running, stored = 0, BACKEND_VALUE_COPIES, False
    phases = []
    if with_opencv:
        copies = OPENCV_PARAM_COPIES + given
        own = OPENCV_VALUE_COPIES if every else OPENCV_OUTPUTS_VALUE_COPIES
        what = "the OpenCV judge" + ("" if every else " (net outputs)")
        phases.append(Phase(what, copies, 0, stored + own, 0.0, early))
    if "float64" in judges:  # float64 values, the running layer's weights and scratch: twice
        # the float32 bytes (reference/_plan.py counts the same; over its own budget it splits
        # the batch image by image, so at batch 1 this is what it needs)
        # and two float64 temporaries the size of the running layer's top
        copies = 2 if streamed else 2 + every + stored
        weights = judge_weights
        judge = Phase("the float64 judge", 1 + given, weights, copies, 2.0, early, 4.0, streamed)
        phases.append(judge)
    run = {"live": streamed, "backend": True}
    if "torch" in backends:
        copies = RUN_PARAM_COPIES + given
        phases.append(Phase("PyTorch", copies, 0, running, 1.0, ("onnxruntime",), **run))
    if "onnxruntime" in backends:
        if not given_model:
            phases.append(Phase("writing the ONNX model", 2, 1, kept, 0.0, ("onnxruntime",)))
        phases.append(Phase("opening ONNX Runtime", RUN_PARAM_COPIES + given, 1, kept, 0.0))
        phases.append(Phase("ONNX Runtime", RUN_PARAM_COPIES + given, 0, running, 1.0, **run))
    if streamed:  # named so in a budget line; OpenCV's net holds every value of its own
        phases = [
            dataclasses.replace(p, what=f"{p.what}, values streamed", live=p.live or p.values == 0)
            for p in phases
        ]
    return phases


# What OpenCV is asked for, most first: every value while that fits the budget at batch 1, then
# the net's outputs (OpenCV reuses its blobs), then nothing (the float64 judge still judges).
OPENCV_SCOPES = ("every value", "net outputs", "none")


@dataclass(frozen=True)
class Fit:
    """The batch a verification runs at, and what OpenCV is asked for within the budget."""

    batch: int
    opencv_scope: str = "every value"
    opencv_note: str = ""  # why OpenCV judges less than every value
    group_bytes: float = 0.0  # streamed mode: the most value bytes a back end returns per run


def _fit_batch(
    loaded: LoadedNet, options: VerifyOptions, budget: Budget, wanted: int, *, shrink: bool
) -> Fit:
    """The largest batch up to ``wanted`` that every phase of the verification fits in (one
    line naming the phase, when none does). OpenCV is a cross-check: where its every-value
    phase does not fit at batch 1, it is asked for the net's outputs only, or left out, and
    the note says why (unless the caller named it as a judge: then the line is the error).
    Streamed (``options.streamed``), OpenCV is asked for the net's outputs at most."""
    import importlib.util

    need = footprint(loaded.graph, loaded.inference.params)
    judges = _judges(options.against, options.opencv)
    opencv = importlib.util.find_spec("cv2") is not None and "opencv" in judges
    streamed = options.streamed
    scopes = OPENCV_SCOPES if opencv else OPENCV_SCOPES[:1]
    if streamed:
        scopes = scopes[1:] or ("none",)
    first_error = last_error = None
    if streamed and opencv:
        first_error = MemoryBudgetError("the values are streamed to disk")
    for scope in scopes:
        phases = verification_phases(
            judges,
            options.backends,
            opencv=opencv,
            stored=options.reference is not None,
            given_model=options.onnx_model is not None,
            opencv_scope=scope,
            streamed=streamed,
            judge_weights=_judge_weight_copies(loaded, need),
        )
        try:
            batch = _fit_phases(phases, need, budget, wanted, shrink=shrink)
            group = _group_room(loaded, phases, need, budget, batch) if streamed else 0.0
        except MemoryBudgetError as exc:
            first_error, last_error = first_error or exc, exc
            if options.against is not None and "opencv" in judges:
                raise  # OpenCV named as a judge: every value of it, or the error
            continue
        note = ""
        if first_error is not None:
            done = "compared on the net's outputs only" if scope == "net outputs" else "left out"
            note = f"OpenCV {done}, every value would not fit: {first_error}"
        return Fit(batch, scope, note, group)
    assert last_error is not None
    raise last_error  # a phase OpenCV is not in: what the budget must grow for


def _judge_weight_copies(loaded: LoadedNet, need: Footprint) -> float:
    """Copies more of the largest layer's weights the float64 judge makes: none where its type
    is read in float32 slabs (``float32_weights``), else its float64 copy (twice the bytes)."""
    try:
        node = loaded.graph.node(need.largest_layer)
    except KeyError:
        return 2.0
    return 0.0 if registry.facts(node.type).float32_weights else 2.0


def _group_room(
    loaded: LoadedNet, phases: list[Phase], need: Footprint, budget: Budget, batch: int
) -> float:
    """Streamed mode: the value bytes a back end may return per run, beside its phase and the
    one judge value read back at a time (at least the largest value, else one line)."""
    largest = max(value_sizes(loaded.graph, batch).values(), default=0.0)
    room = math.inf
    for phase in phases:
        if phase.backend:
            limit = budget.limit + budget.before(*phase.before)
            room = min(room, limit - _phase_bytes(phase, need, batch) - largest)
    if room < largest:
        short = largest - room if math.isfinite(room) else 0.0
        budget.require(
            budget.limit + short,
            f"the verification (a back end returning its largest value, {format_size(largest)}, "
            f"beside its live values, streamed) at batch {batch}",
        )
    return room if math.isfinite(room) else largest


def value_groups(loaded: LoadedNet, values: list[str], batch: int, room: float) -> list[list[str]]:
    """``values`` in graph order, cut into runs whose bytes stay within ``room`` (streamed mode:
    each back end runs once per group, returning that group only)."""
    sizes = value_sizes(loaded.graph, batch)
    groups: list[list[str]] = [[]]
    held = 0.0
    for value in values:
        size = sizes.get(value, 0.0)
        if groups[-1] and held + size > room:
            groups.append([])
            held = 0.0
        groups[-1].append(value)
        held += size
    return [g for g in groups if g]


def _fit_phases(
    phases: list[Phase], need: Footprint, budget: Budget, wanted: int, *, shrink: bool
) -> int:
    """The largest batch up to ``wanted`` that every one of ``phases`` fits in."""
    for phase in phases:
        scratch = phase.scratch * need.scratch_per_item + phase.tops * need.largest_per_item
        values = need.streaming() if phase.live else need
        step = dataclasses.replace(values, scratch_per_item=scratch)
        # A phase that runs before some libraries load may use the room set aside for them.
        room = budget.before(*phase.before)
        own = budget
        if room:
            later = " and ".join(phase.before)
            origin = f"{budget.origin}; plus {format_size(room)} kept for {later}, not loaded yet"
            own = dataclasses.replace(budget, limit=budget.limit + room, origin=origin)
        wanted = plan_batch(
            own,
            step,
            wanted,
            fixed=phase.params * need.params + phase.largest * need.largest_params,
            copies=max(phase.values, 1),
            what=f"the verification ({phase.what})",
            shrink=shrink,
        )
    return wanted


def identity_record(path: str | os.PathLike[str], note: str = "") -> dict[str, Any]:
    """What ``Report.sources`` holds per file: its path, size, SHA-256, git blob id (and how it
    relates to the user's files, when it is a copy)."""
    identity = file_identity(path)
    record: dict[str, Any] = {
        "path": str(path),
        "size": identity.size,
        "sha256": identity.sha256,
        "git_blob": identity.git_blob,
    }
    if note:
        record["note"] = note
    return record


def _our_sources(loaded: LoadedNet) -> dict[str, Any]:
    """The files our back ends were built from (weights may have come from memory)."""
    weights = loaded.weights
    has_file = weights is not None and weights.path and Path(weights.path).is_file()
    prototxt = loaded.prototxt_path
    return {
        "prototxt": identity_record(prototxt) if Path(prototxt).is_file() else None,
        "weights": identity_record(weights.path) if has_file else None,  # type: ignore[union-attr]
    }


def _argmax_rows(array: np.ndarray) -> np.ndarray | None:
    """Predicted class per sample for (N, K) or (N, K, 1, 1) outputs; None for other shapes."""
    if array.ndim >= 2 and all(d == 1 for d in array.shape[2:]) and array.shape[1] > 1:
        return array.reshape(array.shape[0], array.shape[1]).argmax(axis=1)
    return None


def _opencv_judge(
    loaded: LoadedNet,
    weights_path: str | None,
    feeds: Mapping[str, np.ndarray],
    values: list[str],
    sources: dict[str, Any],
) -> tuple[Values | None, str, dict[str, str]]:
    """OpenCV 4's outputs (None when it cannot judge), what it read (its files' identities go
    into ``sources["opencv"]``), and the values it is known to compute differently (left out,
    with the reason)."""
    from .opencv import (
        deploy_prototxt,
        opencv_caffe_available,
        opencv_known_deviations,
        run_opencv_caffe,
        temp_folder,
        write_temp_caffemodel,
    )

    why_not = opencv_caffe_available()
    if why_not is not None:
        return None, f"skipped: {why_not}", {}
    import cv2

    graph = loaded.graph
    with temp_folder() as tmp:
        model_path, label = weights_path, "same files"
        # OpenCV reads neither HDF5 weights nor the blobs of V0 binaries: give it a V2 copy.
        fmt = loaded.weights.format if loaded.weights else None
        if model_path is None or fmt in ("hdf5", "caffemodel-v0"):
            model_path = str(write_temp_caffemodel(graph, loaded.net, Path(tmp)))
            label = f"the prototxt and a V2 caffemodel written from the {fmt or 'given'} weights"
        prototxt, rewritten = deploy_prototxt(loaded, Path(tmp))
        sources["opencv"] = {
            "prototxt": identity_record(
                prototxt, "TEST-phase deploy form written for OpenCV" if rewritten else ""
            ),
            "weights": identity_record(
                model_path, "" if model_path == weights_path else f"V2 copy of the {fmt} weights"
            ),
        }
        try:  # in a child process: a crash of OpenCV's C++ is a skip, not ours (isolated.py)
            outputs = run_isolated(run_opencv_caffe, graph, prototxt, model_path, feeds, values)
        except (cv2.error, ChildFailed) as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()] or ["?"]
            return None, f"skipped: OpenCV {cv2.__version__} cannot run this net ({lines[-1]})", {}
    status = f"OpenCV {cv2.__version__} readNetFromCaffe, {label}"
    if rewritten:
        status += f" ({rewritten})"
    skipped = {}
    for value, why in opencv_known_deviations(graph).items():
        if outputs.pop(value, None) is not None:
            skipped[f"{value} (opencv)"] = why
    return outputs, status, skipped


def _our_backends(
    loaded: LoadedNet,
    feeds: Mapping[str, np.ndarray],
    values: list[str],
    devices: Iterable[str],
    onnx_model: bytes | None,
    report: Report,
    backends: Iterable[str] = REBUILDS,
    bar: Progress | None = None,
    precision: str = "exact",
    groups: list[list[str]] | None = None,
) -> Iterator[tuple[str, Values]]:
    """PyTorch on each device (CUDA when present, in ``precision``) and ONNX Runtime (CPU; CUDA
    when present), one at a time: each back end's values are yielded and never referenced here
    again, so the caller, which compares and drops them, holds one back end's values at once.
    With ``groups`` (streamed mode) each back end runs once per group and yields that group's
    values only. Torch is not imported unless ``backends`` holds it."""
    from .backends import run_torch

    bar = bar or Progress(enabled=False)
    graph = loaded.graph
    for device in devices if "torch" in backends else ():
        import torch

        name = f"torch-{device}"
        if device == "cuda" and not torch.cuda.is_available():
            report.backends[name] = "skipped: no CUDA device"
            continue
        bar.describe(name)
        mode = precision if device == "cuda" else "exact"  # one fp32 on the CPU
        if mode != "exact":
            name += f"-{mode}"
        report.backends[name] = "ran" if mode == "exact" else f"ran in {mode} mode"
        if groups is None:
            yield name, run_torch(graph, feeds, values, device, precision=mode)
        else:
            from ..converters.torch.model import CaffeNet
            from .backends import run_torch_groups

            model = CaffeNet(graph, precision=mode)
            for produced in run_torch_groups(model, feeds, groups, device):
                yield name, produced
                del produced  # before the next group is computed
            del model
        bar.update()
    if "onnxruntime" in backends:
        yield from _onnxruntime_runs(graph, feeds, values, devices, onnx_model, report, bar, groups)


def _onnxruntime_runs(
    graph: Graph,
    feeds: Mapping[str, np.ndarray],
    values: list[str],
    devices: Iterable[str],
    onnx_model: bytes | None,
    report: Report,
    bar: Progress,
    groups: list[list[str]] | None = None,
) -> Iterator[tuple[str, Values]]:
    """ONNX Runtime on the CPU (and CUDA when present) on the given model's bytes, else on a
    model written here, one run at a time (``_our_backends``); with ``groups``, one model per
    group whose outputs are that group's values (``onnx_for_outputs``)."""
    from ..converters.onnx.runtime import CPU, CUDA, cuda_available
    from .backends import run_onnxruntime, with_outputs
    from .opencv import temp_folder

    with temp_folder() as tmp:
        model: bytes | str = onnx_model if onnx_model is not None else ""
        if onnx_model is not None:  # the ROIs too, to be taken as given (verify/ties.py)
            rows = [v for n in row_sources(graph) for v in n.outputs if v not in graph.outputs]
            model = with_outputs(onnx_model, rows)
        if onnx_model is None:
            # Written piece by piece, the weights as external data, read by the runtime
            # itself: never joined in bytes here, never parsed whole into a protobuf there.
            from ..converters.onnx.export import write_onnx_streamed

            model = str(Path(tmp) / "model.onnx")
            write_onnx_streamed(
                graph, model, extra_outputs=values, check=False, external="weights.bin"
            )
        providers = [("onnxruntime-cpu", CPU)]
        if "cuda" in devices:
            if cuda_available():
                providers.append(("onnxruntime-cuda", CUDA))
            else:
                report.backends["onnxruntime-cuda"] = "skipped: no CUDA execution provider"
        for name, provider in providers:
            bar.describe(name)
            report.backends[name] = "ran"
            if groups is None or not isinstance(model, str):
                yield name, run_onnxruntime(model, feeds, provider)
            else:
                yield from _onnxruntime_groups(name, model, graph, provider, groups, feeds)
            bar.update()


def _onnxruntime_groups(
    name: str,
    model: str,
    graph: Graph,
    provider: str,
    groups: list[list[str]],
    feeds: Mapping[str, np.ndarray],
) -> Iterator[tuple[str, Values]]:
    """Streamed mode: ``model`` cut into one piece per group (``onnx_segments``: every node
    runs once), else ONNX Runtime once per group on a copy of ``model`` whose outputs are that
    group's values; the weights file beside it is shared."""
    from .backends import onnx_for_outputs, onnx_segments, run_onnx_segments, run_onnxruntime

    folder = str(Path(model).parent)
    segments = onnx_segments(model, graph, groups, folder)
    if segments is not None:
        for produced in run_onnx_segments(segments, feeds, provider):
            yield name, produced
            del produced  # before the next piece runs
        return
    part = str(Path(folder) / "group.onnx")
    for group in groups:
        if onnx_for_outputs(model, group, part):
            yield name, run_onnxruntime(part, feeds, provider)


class _Comparer:
    """Compares each back end with every judge as it arrives, so only the judges' values and
    one back end's stay alive; what later steps need of a back end after it is dropped (its
    values' magnitudes, its argmax rows) is kept as scalars and small arrays.

    The rows are those of comparing every back end at once: per back end, per judge, per
    value. A value's error scale (``error_scales``) is read from the judge, or where the judge
    lacks it from the first back end holding it (the CPU model, which computes every value)."""

    def __init__(
        self,
        loaded: LoadedNet,
        plan: VerifyPlan,
        refs: dict[str, Judged],
        tolerance: Tolerance,
        report: Report,
    ) -> None:
        graph = loaded.graph
        self.loaded, self.plan, self.refs = loaded, plan, refs
        self.tolerance, self.report = tolerance, report
        self.detections = _detection_values(graph)
        self.row_sets = _row_sets(graph)
        # ROI rows hold boxes, no classes
        self.scored = [v for v in graph.outputs if v not in self.row_sets]
        self.params = loaded.inference.params
        self.lengths = accumulation_lengths(graph, self.params)
        self.ref_sizes = {name: magnitudes(ref) for name, ref in refs.items()}
        self.fallback: dict[str, np.ndarray] = {}  # first back end's magnitudes, per value
        self.first_rows: dict[str, np.ndarray | None] = {}  # first back end's argmax rows
        self.ran: list[str] = []
        self._rerun: tuple[tuple, Judged | None] | None = None  # the last near-tie rerun
        # masks taken as given so far, per back end: in streamed mode a later group holds
        # the values downstream of a mask an earlier group held
        self._masks: dict[str, dict[str, np.ndarray]] = {}
        self._moved: dict[str, np.ndarray | None] = {}  # judge_movements of failed values

    def add(self, backend: str, produced: Values) -> None:
        """Every row of one back end against every judge (``produced`` is not kept)."""
        graph = self.loaded.graph
        if backend not in self.ran:
            self.ran.append(backend)
        for value, array in produced.items():
            if value not in self.fallback:
                self.fallback[value] = np.asarray(_largest(array))
        for output in self.scored:
            if output not in self.first_rows and output in produced:
                self.first_rows[output] = _argmax_rows(produced[output])
        rerun = self._rerun_at_ties(backend, produced)
        judged: dict[str, Judged] = {}
        past: list[tuple[int, str, str, float]] = []  # rows past the static limit
        for ref_name, ref_values in self.refs.items():
            if ref_name == "float64" and rerun is not None:
                ref_values = rerun
            judged[ref_name] = ref_values
            past += self._rows(backend, produced, ref_name, ref_values)
            _argmax_agreement(
                self.scored, backend, produced, ref_name, ref_values, self.report, self.tolerance
            )
        if past and "float64" in self.refs:
            self._measure_movement([value for _, value, _, _ in past])
        for index, value, ref_name, allowance in past:
            movement = self._moved.get(value)
            if movement is not None:
                self.report.comparisons[index] = compare(
                    value,
                    graph.blob_of[value],
                    produced[value],
                    judged[ref_name][value],
                    backend,
                    ref_name,
                    self.tolerance,
                    allowance,
                    movement,
                )

    def _rows(
        self, backend: str, produced: Values, ref_name: str, ref_values: Judged
    ) -> list[tuple[int, str, str, float]]:
        """The rows of ``produced`` against one judge, added to the report; those past the
        static limit (not aligned as sets) are returned: (row index, value, judge, allowance)."""
        graph = self.loaded.graph
        past = []
        scales = error_scales(graph, self.params, self.ref_sizes[ref_name], self.fallback)
        for value in self.plan.values:
            if value not in produced or value not in ref_values:
                continue
            mine, theirs, note = _aligned(
                produced[value], ref_values[value], value, self.detections, self.row_sets
            )
            allowance = self.tolerance.growth_limit(
                *self.lengths.get(value, (0.0, 0)),
                scales.get(value, 0.0),
                float32_judge=ref_name in FLOAT32_JUDGES,
            )
            row = compare(
                value,
                graph.blob_of[value],
                mine,
                theirs,
                backend,
                ref_name,
                self.tolerance,
                allowance,
            )
            if not row.passed and not note:
                past.append((len(self.report.comparisons), value, ref_name, allowance))
            if note:
                row.note = f"{row.note}; {note}" if row.note else note
            self.report.comparisons.append(row)
        return past

    def _measure_movement(self, values: list[str]) -> None:
        """How far the float64 judge moves on ``values`` (those not measured yet), per item, when
        its weights move by float32 rounding (compare.judge_movements): one rerun of the judge
        holding only those values."""
        missing = [v for v in dict.fromkeys(values) if v not in self._moved]
        if not missing:
            return
        loaded, plan = self.loaded, self.plan

        def rerun() -> Judged | None:
            return float64_judge(
                loaded, plan.feeds, missing, required=False, max_memory=int(plan.budget.limit)
            )[0]

        try:
            found = judge_movements(loaded.graph, rerun, self.refs["float64"])
        except Exception as exc:  # out of memory (the moved weights, the rerun's values)
            if memory_failure(exc) is None:
                raise
            found = {}
            self.report.notes.append(
                "the float64 judge's own movement under float32 rounding could not be "
                f"measured ({memory_failure(exc)}): the rows past the static limit stand"
            )
        self._moved.update({v: found.get(v) for v in missing})  # None: the judge could not

    def finish(self) -> None:
        """Class variety of each output over the batch (the first back end's argmax rows)."""
        self._rerun = None
        for output in self.scored:
            rows = self.first_rows.get(output)
            if rows is not None:
                self.report.distinct_classes[output] = len(set(rows.tolist()))

    def _rerun_at_ties(self, backend: str, produced: Values) -> Judged | None:
        """When this back end's argmax masks differ from the float64 judge's only at
        near-ties, the judge rerun with those masks as given (verify/ties.py; the report notes
        each). A choice downstream of one taken is judged against the rerun, not the first
        judge (SegNet's per-pixel class after its pooling masks), so this repeats until no new
        choice is found. Back ends that chose alike in a row share one rerun."""
        judge = self.refs.get("float64")
        graph, tolerance = self.loaded.graph, self.tolerance
        if judge is None or not has_choices(graph):
            return None
        scales = error_scales(graph, self.params, self.ref_sizes["float64"], self.fallback)

        def limit(value: str) -> float:
            growth = tolerance.growth_limit(
                *self.lengths.get(value, (0.0, 0)), scales.get(value, 0.0), float32_judge=False
            )
            return max(tolerance.limit(judge[value]), growth)

        fixed = dict(self._masks.get(backend, {}))
        current = self._judge_with(fixed) if fixed else judge
        notes: list[str] = []
        for _ in range(TIE_ROUNDS):
            if current is None:
                break
            found_masks, more = near_tie_masks(graph, current, produced, limit)
            found_classes, most = near_tie_classes(graph, current, produced, limit)
            found_rows, rows = recomputed_rows(
                graph, current, produced, limit, layer_forward, self.plan.feeds
            )
            found = {
                name: array
                for name, array in {**found_masks, **found_classes, **found_rows}.items()
                if name not in fixed or not np.array_equal(fixed[name], array)
            }
            if not found:
                break
            fixed.update(found)
            notes += more + most + rows
            current = self._judge_with(fixed)
        self._masks[backend] = fixed
        if not fixed:
            return None
        if current is not None:
            self.report.notes.extend(f"{backend}: {note}" for note in notes)
        return current

    def _judge_with(self, fixed: dict[str, np.ndarray]) -> Judged | None:
        """The float64 judge with ``fixed``'s choices taken as given: rerun from the first
        layer that reads one (None where the rerun could not be made); choices no layer reads
        (ArgMax's output) are laid over it."""
        judge = self.refs["float64"]
        read = {v for node in self.loaded.graph.nodes for v in node.inputs}
        taken = {name: array for name, array in fixed.items() if name in read}
        if not taken:
            return ChainMap(fixed, judge)
        key = tuple((n, hashlib.sha256(a.tobytes()).hexdigest()) for n, a in sorted(taken.items()))
        if self._rerun is None or self._rerun[0] != key:
            self._rerun = None  # dropped before the next rerun is made
            spill = None
            if self.plan.spill is not None:
                rerun = Path(self.plan.spill) / "rerun"
                shutil.rmtree(rerun, ignore_errors=True)
                spill = SpilledValues(rerun)
            found, _ = float64_judge(
                self.loaded,
                self.plan.feeds,
                self.plan.values,
                required=False,
                max_memory=int(self.plan.budget.limit),
                fixed=taken,
                spill=spill,
                resume=judge,
            )
            if found is not None and not isinstance(found, SpilledValues):
                found = as_float32(dict(found))
            # the values before the first choice are the judge's own
            self._rerun = (key, None if found is None else ChainMap(found, judge))
        found = self._rerun[1]
        return None if found is None else ChainMap(fixed, found)


def _argmax_agreement(
    outputs: Iterable[str],
    backend: str,
    produced: Values,
    ref_name: str,
    ref_values: Judged,
    report: Report,
    tolerance: Tolerance,
) -> None:
    """How many rows of each output pick the judge's class; a row picking another class whose
    judge score lies within twice the output's plain limit of the judge's best (two classes
    float32 cannot order) counts as a near-tie, not a disagreement."""
    for output in outputs:
        if output in produced and output in ref_values:
            reference = ref_values[output]
            mine, theirs = _argmax_rows(produced[output]), _argmax_rows(reference)
            if mine is not None and theirs is not None and mine.shape == theirs.shape:
                agree = int((mine == theirs).sum())
                scores = np.asarray(reference).reshape(len(theirs), -1)
                rows = np.arange(len(theirs))
                gap = np.abs(scores[rows, theirs] - scores[rows, mine])
                near = int(((mine != theirs) & (gap <= 2 * tolerance.limit(scores))).sum())
                report.argmax.append(
                    ArgmaxAgreement(output, backend, ref_name, agree, len(mine), near)
                )


def _detection_values(graph: Graph) -> dict[str, DetectionSettings | None]:
    """Each detections layer's tops and the thresholds it decides with."""
    return {
        v: _detection_settings(n)
        for n in graph.nodes
        if registry.facts(n.type).detections is not None
        for v in n.outputs
    }


def _aligned(
    mine: np.ndarray,
    theirs: np.ndarray,
    value: str,
    detections: Mapping[str, DetectionSettings | None],
    row_sets: set[str],
) -> tuple[np.ndarray, np.ndarray, str]:
    """Detections and row sets paired as sets (verify/detections.py), anything else as is."""
    if value in detections:
        return align_detections(mine, theirs, detections[value])
    if value in row_sets:
        return align_row_sets(mine, theirs)
    return mine, theirs, ""


def _row_sets(graph: Graph) -> set[str]:
    """Values verify pairs as row sets (the ``row_set`` and ``joins_rows`` facts)."""
    found: set[str] = set()
    for node in graph.nodes:
        info = registry.facts(node.type)
        if (info.row_set is not None and info.row_set(node)) or (
            info.joins_rows is not None
            and info.joins_rows(node)
            and node.inputs
            and all(v in found for v in node.inputs)
        ):
            found.update(node.outputs)
    return found


def _detection_settings(node: Node) -> DetectionSettings | None:
    """The thresholds an SSD detections node decides with (None: a type without them)."""
    if not node.param.HasField("detection_output_param"):
        return None
    try:
        return detection_settings(node.param.detection_output_param)
    except ValueError:
        return None


JUDGES = ("float64", "opencv")


def _judges(against: Iterable[str] | None, opencv: bool) -> tuple[str, ...]:
    """The judges asked for: ``against`` by name (checked), else every one (OpenCV unless off)."""
    if against is None:
        return tuple(j for j in JUDGES if opencv or j != "opencv")
    names = [a.strip() for a in against if a.strip()]
    unknown = [a for a in names if a not in JUDGES]
    if unknown or not names:
        raise CaffeCompatError(
            f"unknown judge(s) {', '.join(unknown) or '(none given)'}: judges are "
            f"{', '.join(JUDGES)}"
        )
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class VerifyOptions:
    """What ``verify_loaded`` is asked: the inputs (``feeds``, else ``batch`` synthetic images
    from ``seed`` minus ``mean``; ``reference`` arrays, whose own inputs count when given), the
    judges (``against``, ``opencv``, ``require_reference``), our back ends (``backends``,
    ``devices``, ``precision``, ``onnx_model``: an exported model to check instead of one
    exported here), ``tolerance``, ``max_memory`` and ``progress`` (draw a bar on a terminal).
    ``weights_path``: the user's weights file, which OpenCV reads itself; ``inputs_label``: how
    the report names given inputs."""

    weights_path: str | None = None
    feeds: Mapping[str, np.ndarray] | None = None
    batch: int = 20
    seed: int = 0
    mean: tuple[float, ...] | None = None
    reference: Mapping[str, np.ndarray] | None = None
    onnx_model: bytes | None = None
    tolerance: Tolerance | None = None
    devices: Iterable[str] = ("cpu", "cuda")
    opencv: bool = True
    against: Iterable[str] | None = None
    inputs_label: str | None = None
    require_reference: bool = True
    backends: Iterable[str] = REBUILDS
    progress: bool = True
    precision: str = "exact"
    max_memory: Budget | int | str | None = None
    streamed: bool = False  # the judge's values on disk, back ends run per group (spill.py)


@dataclass
class VerifyPlan:
    """The inputs every side runs on, and which sides run."""

    feeds: Mapping[str, np.ndarray]
    inputs_label: str
    values: list[str]  # every value but the inputs, in graph order
    judges: tuple[str, ...]
    required: bool  # judges named by the caller: each must run
    backends: tuple[str, ...]
    devices: list[str]
    budget: Budget
    opencv_scope: str = "every value"  # OPENCV_SCOPES
    opencv_note: str = ""  # why OpenCV judges less than every value
    groups: list[list[str]] | None = None  # streamed mode: the values of each back-end run
    spill: str | None = None  # streamed mode: the folder holding the judge's values

    @property
    def batch(self) -> int:
        return next(iter(self.feeds.values())).shape[0]

    @property
    def steps(self) -> int:
        torch_runs = len(self.devices) * ("torch" in self.backends)
        return len(self.judges) + torch_runs + ("onnxruntime" in self.backends) + 1


def _synthetic_feeds(
    loaded: LoadedNet, options: VerifyOptions, budget: Budget
) -> tuple[Mapping[str, np.ndarray], str, Fit]:
    """``options.batch`` synthetic images, fewer where the memory budget says so (the net's
    own batch where it computes across its batch axis), and how the report names them."""
    graph, batch, seed = loaded.graph, options.batch, options.seed
    wanted, fixed_batch = feed_batch(graph, batch)
    fit = _fit_batch(loaded, options, budget, wanted, shrink=fixed_batch is None)
    fitted = fit.batch
    count = None if fixed_batch is not None else fitted
    feeds = feeds_for(
        graph.inputs,
        count,
        seed=seed,
        mean=options.mean,
        ids=index_inputs(graph),
        makers=structured_inputs(graph),
    )
    label = f"{fitted} synthetic images (seed {seed}), mean subtracted"
    if fixed_batch is not None and fitted != batch:
        label += f" (the net's own batch: {fixed_batch})"
    elif fitted < batch:
        label += f" (not {batch}: the memory budget is {format_size(budget.limit)})"
    return feeds, label, fit


def _check_given_feeds(
    loaded: LoadedNet, feeds: Mapping[str, np.ndarray], options: VerifyOptions, budget: Budget
) -> Fit:
    """Given arrays run as they are: at the net's own batch where it has one, within budget
    (OpenCV asked for less where that is what fits)."""
    graph = loaded.graph
    wanted, fixed_batch = feed_batch(graph, options.batch)
    given = next(iter(feeds.values())).shape[0] if feeds else 1
    if fixed_batch is not None and given != wanted:
        raise CaffeCompatError(
            f"the inputs hold {given} items, but this net runs only at its declared batch "
            f"{wanted}: {fixed_batch}",
            path=graph.path,
        )
    return _fit_batch(loaded, options, budget, given, shrink=False)


def plan_verification(loaded: LoadedNet, options: VerifyOptions) -> VerifyPlan:
    """The inputs (given, the reference file's own, or synthetic within the memory budget)
    and the judges and back ends that will run."""
    graph = loaded.graph
    budget = resolve(options.max_memory)
    feeds, label = options.feeds, options.inputs_label
    if options.reference is not None and feeds is None:
        feeds = stored_inputs(graph, options.reference)
        label = label or ("the reference file's own inputs" if feeds else None)
    if feeds is None:
        feeds, synthetic, fit = _synthetic_feeds(loaded, options, budget)
        label = label or synthetic
    else:
        fit = _check_given_feeds(loaded, feeds, options, budget)
    batch = next(iter(feeds.values())).shape[0] if feeds else 1
    values = [v for v in graph.values if v not in graph.inputs]
    groups = value_groups(loaded, values, batch, fit.group_bytes) if options.streamed else None
    return VerifyPlan(
        feeds=feeds,
        inputs_label=label or "given arrays",
        values=values,
        judges=_judges(options.against, options.opencv),
        required=options.against is not None,
        backends=tuple(options.backends),
        devices=list(options.devices),
        budget=budget,
        opencv_scope=fit.opencv_scope,
        opencv_note=fit.opencv_note,
        groups=groups,
    )


def _run_judges(
    loaded: LoadedNet, plan: VerifyPlan, options: VerifyOptions, report: Report, bar: Progress
) -> dict[str, Judged]:
    """The stored arrays, the float64 reference and OpenCV, as asked and where they can run.

    OpenCV runs first: its net holds the weights about twice more and every value while it
    runs, which fits best when no other judge's values are alive yet. The float64 judge's
    values are then kept in float32 (``as_float32``). The report lists them as always: the
    float64 judge first."""
    graph, feeds, values = loaded.graph, plan.feeds, plan.values
    refs: dict[str, Judged] = {}
    found_opencv: Values | None = None
    opencv_status = "skipped: not asked for"
    if "opencv" in plan.judges and plan.opencv_scope == "none":
        opencv_status = f"skipped: {plan.opencv_note}"
        bar.update()
    elif "opencv" in plan.judges:
        bar.describe("opencv")
        asked = values
        if plan.opencv_scope == "net outputs":
            asked = [v for v in values if v in set(graph.outputs)]
        found_opencv, opencv_status, skipped = _opencv_judge(
            loaded, options.weights_path, feeds, asked, report.sources
        )
        if found_opencv is None and plan.required:
            raise CaffeCompatError(f"the OpenCV judge cannot run: {opencv_status}")
        if found_opencv is not None and plan.opencv_note:
            opencv_status += f"; {plan.opencv_note}"
        report.skipped_values.update(skipped)
        bar.update()
    if options.reference is not None:
        refs["stored"] = stored_values(graph, options.reference)
        report.references["stored"] = f"{len(refs['stored'])} blobs from the reference file"
    if "float64" in plan.judges:
        bar.describe("float64 reference")
        found = _float64_values(loaded, plan, options, found_opencv, report)
        if found is not None:
            refs["float64"] = found
            opencv_files = report.sources.pop("opencv", None)
            report.sources["float64"] = _our_sources(loaded)
            if opencv_files is not None:
                report.sources["opencv"] = opencv_files
        bar.update()
    report.references["opencv"] = opencv_status
    if found_opencv is not None:
        refs["opencv"] = found_opencv
    log.info("judges: %s", "; ".join(f"{k}: {v}" for k, v in report.references.items()))
    return refs


def _float64_values(
    loaded: LoadedNet,
    plan: VerifyPlan,
    options: VerifyOptions,
    found_opencv: Values | None,
    report: Report,
) -> Judged | None:
    """The float64 judge's values, kept in float32 (``as_float32``), or in streamed mode on
    disk (``SpilledValues``); None where it cannot run (the status says why)."""
    graph, feeds = loaded.graph, plan.feeds
    # The judge's own budget is what the step does not already hold: the loaded blobs, the
    # inputs, OpenCV's values and an exported model's bytes stay alive while it runs.
    held = sum(np.asarray(b).nbytes for node in graph.nodes for b in node.blobs)
    held += sum(np.asarray(f).nbytes for f in feeds.values())
    held += sum(np.asarray(v).nbytes for v in (found_opencv or {}).values())
    held += len(options.onnx_model or b"")
    limit = max(int(plan.budget.limit) - held, 0)
    spill = None
    if plan.spill is not None:
        spill = SpilledValues(Path(plan.spill) / "float64")
        total = sum(value_sizes(graph, plan.batch).values())
        require_disk(plan.spill, total, "the float64 judge, its values streamed,")
    found, status = float64_judge(
        loaded, feeds, plan.values, required=plan.required, max_memory=limit, spill=spill
    )
    report.references["float64"] = status
    if isinstance(found, SpilledValues):
        report.notes.append(
            f"values streamed: the float64 judge wrote its {len(found)} values "
            f"({format_size(found.written)}) to temporary files, read back one at a time, "
            f"and each back end returned its values in {len(plan.groups or ())} group(s), "
            "one at a time (PyTorch in one forward, ONNX Runtime on its model cut into "
            "one piece per group), since one item's values do not fit in memory together"
        )
        return found
    return None if found is None else as_float32(dict(found))


def _export_check_reference(
    loaded: LoadedNet, plan: VerifyPlan, options: VerifyOptions, report: Report, bar: Progress
) -> dict[str, Judged] | None:
    """No independent judge ran: refuse, or (``require_reference=False``) compare with our
    own PyTorch model on the CPU (an export check; None when torch is not among the back
    ends, the report then says why it holds no comparison)."""
    if options.require_reference:
        why = "; ".join(f"{k} {v}" for k, v in report.references.items())
        raise CaffeCompatError(
            f"no independent judge could run ({why})", remedy=Remedy("reference")
        )
    if "torch" not in plan.backends:
        report.references["none"] = (
            "no independent judge runs here, and the export check against our PyTorch "
            "model needs torch"
        )
        return None
    from .backends import run_torch

    bar.describe("torch-cpu (reference)")
    refs = {"torch-cpu": run_torch(loaded.graph, plan.feeds, plan.values)}
    report.references["torch-cpu"] = "our own PyTorch model (not independent: an export check only)"
    bar.update()
    plan.devices = [d for d in plan.devices if d != "cpu"]
    return refs


def _onnx_refuses_user_code(loaded: LoadedNet) -> str | None:
    """Why ONNX cannot hold the net, when the only reason is user code (Python layers): the
    rest is verified without ONNX Runtime. Any other unsupported layer stays an error."""
    missing = registry.missing_support(loaded.graph.nodes, ["onnx"])
    if missing and all(registry.facts(m.layer_type).user_instance for m in missing):
        return "; ".join(f'layer "{m.name}": {m.detail}' for m in missing)
    return None


def verify_loaded(
    loaded: LoadedNet, options: VerifyOptions | None = None, **keywords: Any
) -> Report:
    """Compare every shared blob between our back ends and the independent judges.

    ``options`` (``VerifyOptions``) and/or ``keywords`` naming its fields (they override).
    Judges: ``float64`` (``caffe_compat.reference``, everywhere) and ``opencv`` (OpenCV 4's
    Caffe reader on the same files, where installed), plus ``reference`` arrays when given.
    ``against`` None takes every judge that can run here (``opencv=False`` leaves OpenCV out);
    naming judges requires each of them (one line when one cannot run).

    Without any independent judge, ``require_reference=False`` (convert's quick check) compares
    ONNX Runtime with our PyTorch model instead of failing: an export check, said so in the
    report, not a proof of parity with Caffe. ``backends`` limits which of ours run (``torch``,
    ``onnxruntime``); without ``torch``, torch is never imported, and with no independent judge
    the report has no comparisons (``references["none"]`` says why). ``precision`` runs
    PyTorch on CUDA in that numeric mode, so the report shows whether parity holds there.
    ``max_memory`` (default: a share of the available memory, see ``budget.py``) bounds what the
    comparison may hold; synthetic batches shrink to fit it, given arrays must fit as they are."""
    options = dataclasses.replace(options or VerifyOptions(), **keywords)
    plan = plan_verification(loaded, options)
    if plan.groups is None:
        return _verify_planned(loaded, options, plan)
    if options.reference is not None or options.onnx_model is not None:
        raise CaffeCompatError(
            "a streamed verification compares the float64 judge with models built here; "
            "stored arrays or a given ONNX model must fit in memory"
        )
    from .opencv import temp_folder

    with temp_folder() as folder:
        plan.spill = folder
        return _verify_planned(loaded, options, plan)


def _verify_planned(loaded: LoadedNet, options: VerifyOptions, plan: VerifyPlan) -> Report:
    """``verify_loaded`` once its plan is made (and, streamed, its folder for the judge)."""
    report = Report(inputs=plan.inputs_label, batch=plan.batch)
    if "onnxruntime" in plan.backends and options.onnx_model is None:
        user_code = _onnx_refuses_user_code(loaded)
        if user_code:
            plan.backends = tuple(b for b in plan.backends if b != "onnxruntime")
            report.backends["onnxruntime-cpu"] = f"skipped: {user_code}"
    label = f"verify {loaded.graph.name or 'net'}"
    with Progress(plan.steps, label=label, unit="steps", enabled=options.progress) as bar:
        refs = _run_judges(loaded, plan, options, report, bar)
        if not refs and plan.groups is not None:
            why = "; ".join(f"{k} {v}" for k, v in report.references.items())
            raise CaffeCompatError(f"no judge could run on the streamed values ({why})")
        if not refs:
            fallback = _export_check_reference(loaded, plan, options, report, bar)
            if fallback is None:
                return report
            refs = fallback
        tolerance = options.tolerance or Tolerance()
        comparer = _Comparer(loaded, plan, refs, tolerance, report)
        runs = _our_backends(
            loaded,
            plan.feeds,
            plan.values,
            plan.devices,
            options.onnx_model,
            report,
            plan.backends,
            bar,
            options.precision,
            plan.groups,
        )
        for name, produced in runs:
            comparer.add(name, produced)
            del produced  # dropped before the next back end runs
        comparer.finish()
        ran = {name.split("-")[0] for name in [*comparer.ran, *refs] if name.startswith(REBUILDS)}
        if ran:
            mine = _our_sources(loaded)  # the ONNX model too was built from these files
            report.sources.update({name: mine for name in sorted(ran)})
        bar.describe("comparing")
        bar.update()
    return report


# Where one item at the declared input size does not fit the memory budget, verify runs
# synthetic inputs at the height and width divided by these factors, the first that fits, as
# long as every layer's parameters keep their shapes (the same weights, the same arithmetic at
# each position) and no side gets under SMALLEST_SIDE.
SHRINK_FACTORS = (2, 4, 8)
SMALLEST_SIDE = 16


def _param_shapes(loaded: LoadedNet) -> dict[str, list[tuple[int, ...]]]:
    return {k: [tuple(int(d) for d in s) for s in v] for k, v in loaded.inference.params.items()}


def _divided(side: int, factor: int) -> int:
    """``side / factor``, kept a multiple of the power of two (up to 32) that divides ``side``:
    a net whose maps halve five times and are joined again (YOLO's routes, U-Nets) runs only
    at such sizes (608 -> 288, not 304); other sides are rounded up."""
    step = math.gcd(side, 32)
    if step == 1:
        return -(-side // factor)
    return max(step, side // factor // step * step)


def _smaller(inputs: Mapping[str, tuple[int, ...]], factor: int) -> dict[str, tuple[int, ...]]:
    """Every input with spatial axes (N x C x H x W, or a clip's N x C x D x H x W) at its
    height and width divided by ``factor`` (``_divided``); {} when a side would get too
    small or none gets smaller."""
    shapes = {}
    for name, shape in inputs.items():
        if len(shape) < 4:
            continue
        spatial = [_divided(int(d), factor) for d in shape[-2:]]
        if min(spatial) < SMALLEST_SIDE or spatial == list(shape[-2:]):
            return {}  # too small, or no smaller size keeps the sides' power of two
        shapes[name] = (*shape[:-2], *spatial)
    return shapes


def _verify_smaller(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    declared: dict[str, tuple[int, ...]],
    params: dict[str, list[tuple[int, ...]]],
    over: MemoryBudgetError,
    net_options: dict[str, Any],
    options: dict[str, Any],
    streamed: bool = False,
) -> tuple[Report, LoadedNet] | None:
    """The verification at the first smaller input size that fits the budget (SHRINK_FACTORS),
    its report saying so; None where none does. ``streamed``: with the values streamed to disk
    (a net whose declared size does not fit even so: Dilation's 852 x 1640 KITTI front end)."""
    from ..errors import NetDefinitionError

    budget = options["max_memory"]
    for factor in SHRINK_FACTORS:
        shapes = _smaller(declared, factor)
        if not shapes:
            break
        settings = {**net_options, "input_shapes": shapes}
        try:
            same = _param_shapes(load_net(prototxt, **settings)) == params
        except NetDefinitionError:
            break  # a layer refuses the size (a fixed Reshape, a crop larger than the map)
        if not same:
            break  # an InnerProduct's width follows the input: other weights
        loaded = load_net(prototxt, weights, max_memory=budget, **settings)
        sizes = ", ".join(
            f"{name} {'x'.join(map(str, shape))} (declared {'x'.join(map(str, declared[name]))})"
            for name, shape in shapes.items()
        )
        loaded.assumed.append(
            f"verified at the input size divided by {factor}: {sizes}, since one item at the "
            f"declared size does not fit ({over.reason}); every layer's parameters have the same "
            "shapes at both sizes"
        )
        try:
            run_options = _streamed_options(options) if streamed else options
            report = verify_loaded(loaded, weights_path=str(weights), **run_options)
        except Exception as exc:
            failed = exc if isinstance(exc, MemoryBudgetError) else memory_failure(exc)
            if failed is None:
                raise
            log.info("verify at the input size divided by %d does not fit: %s", factor, failed)
            del loaded, exc
            _let_go()
            if _size_independent(failed):
                break  # no smaller size helps: the streamed run opens ONNX Runtime in pieces
            continue
        return report, loaded
    return None


# What an allocation failure says when it happened while ONNX Runtime opened a session: that
# holds the weights (and their copies while read), whatever the input size.
_SESSION_OPENING = "exception during initialization"


def _size_independent(failed: MemoryBudgetError) -> bool:
    """The failure happened where a smaller input changes nothing: ONNX Runtime opening the
    whole model (measured on FCN-32s: std::bad_alloc there at every size down to 1/8)."""
    return _SESSION_OPENING in failed.reason.lower()


def _let_go() -> None:
    """Free what a failed attempt still holds in reference cycles (its frames, their arrays
    and models) before the next attempt allocates: measured on FCN-32s, 700 MB of a 4 GiB cap
    stayed taken after a failed attempt until the cycle collector ran."""
    import gc

    gc.collect()


# Items a streamed verification (the fallback when the values do not fit in memory) takes at
# most: each item's values go through disk once per back end and group, so more items only
# cost time (DeepLab-ResNet's 11 items: 16.6 GiB written, 114 s; at 2 items, a fifth of it).
STREAMED_BATCH = 2


def _streamed_options(options: dict[str, Any]) -> dict[str, Any]:
    batch = options.get("batch")
    fewer = STREAMED_BATCH if batch is None else min(int(batch), STREAMED_BATCH)
    return {**options, "streamed": True, "batch": fewer}


def _verify_within(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    loaded: LoadedNet,
    over: MemoryBudgetError,
    net_options: dict[str, Any],
    options: dict[str, Any],
) -> tuple[Report, LoadedNet]:
    """One item at the declared size does not fit (``over``): verify at a smaller input size
    where the net allows it (synthetic inputs, every layer's parameters unchanged), else at the
    declared size with the values streamed to disk (verify/spill.py: slower, exact), else
    streamed at a smaller size. The streamed run's error at the declared size, when nothing
    fits, is the line shown: what the budget must grow for at the least."""
    declared: dict[str, tuple[int, ...]] = {}
    params: dict[str, list[tuple[int, ...]]] = {}
    if not options.get("feeds") and not net_options.get("input_shapes"):
        declared = dict(loaded.graph.inputs)
        params = _param_shapes(loaded)
        del loaded  # its weights are read again at the smaller size
        smaller = _verify_smaller(prototxt, weights, declared, params, over, net_options, options)
        if smaller is not None:
            return smaller
        _let_go()
        loaded = load_net(prototxt, weights, max_memory=options["max_memory"], **net_options)
    try:
        report = verify_loaded(loaded, weights_path=str(weights), **_streamed_options(options))
    except Exception as exc:
        failed = exc if isinstance(exc, MemoryBudgetError) else memory_failure(exc)
        if failed is None:
            raise
        failed = failed.with_traceback(None)
    else:
        return report, loaded
    del loaded
    _let_go()
    if declared and not _size_independent(failed):  # streamed at a smaller size: the last resort
        smaller = _verify_smaller(
            prototxt, weights, declared, params, failed, net_options, options, streamed=True
        )
        if smaller is not None:
            return smaller
    raise failed from None


def verify(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    *,
    onnx_path: str | os.PathLike[str] | None = None,
    reference_path: str | os.PathLike[str] | None = None,
    **options: object,
) -> Report:
    """Load the files and run :func:`verify_loaded`."""
    net_keys = (
        "phase",
        "stages",
        "level",
        "input_shapes",
        "allow_unknown_fields",
        "typical_input_shapes",
    )
    net_options = {k: options.pop(k) for k in net_keys if k in options}
    # Made before the weights are read: the budget counts them among the copies it plans for,
    # so what they map must not also shrink the memory it starts from.
    budget = resolve(options.get("max_memory"))  # type: ignore[arg-type]
    options["max_memory"] = budget  # file sizes declared inside are checked against it too
    loaded = load_net(prototxt, weights, max_memory=budget, **net_options)  # type: ignore[arg-type]
    reference = load_reference_npz(reference_path, max_memory=budget) if reference_path else None
    onnx_model = Path(onnx_path).read_bytes() if onnx_path else None
    over: MemoryBudgetError | None = None
    try:
        report = verify_loaded(
            loaded,
            weights_path=str(weights),
            reference=reference,
            onnx_model=onnx_model,
            **options,  # type: ignore[arg-type]
        )
    except Exception as exc:  # over the budget, or an allocation that failed anyway
        over = exc if isinstance(exc, MemoryBudgetError) else memory_failure(exc)
        if over is None or reference is not None or onnx_model is not None:
            raise  # the caller's arrays or model are compared in memory or not at all
        if options.get("streamed"):
            raise over from None
        over = over.with_traceback(None)  # the failed run's frames (and arrays) are let go
    if over is not None:  # outside the handler: nothing of the failed run is still held
        _let_go()
        report, loaded = _verify_within(prototxt, weights, loaded, over, net_options, options)
    report.notes.extend(fork_notes(loaded))
    if reference_path:
        report.sources["stored"] = {"arrays": identity_record(reference_path)}
    if onnx_path and "onnxruntime" in report.sources:
        report.sources["onnxruntime"] = {"onnx": identity_record(onnx_path)}
    return report
