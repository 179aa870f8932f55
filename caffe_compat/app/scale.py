"""Age and gender over millions of photos with Ray Data, resumable, into Parquet shards.

``predict_dataset(SOURCE, DIR)`` (CLI: ``caffe-compat predict SOURCE --engine ray --output DIR``)
runs the same detection, crops, preprocessing and nets as ``Predictor.predict_many``, as a Ray
Data pipeline::

    listing (driver: paths only, minus those DIR already holds)
      -> read bytes -> decode + detect + cut + shrink      CPU tasks (one OpenCV thread each)
      -> age and gender nets, commit one shard per call    actors (one set of nets each; a GPU
                                                            each where the cluster has GPUs)
      -> one row of counts per call                        back to the driver

No photo, face or result passes through the driver: it lists paths and reads counts. Local mode
(``ray.init()`` here) is the default; ``address`` joins a running cluster, whose workers must see
SOURCE and DIR at the same paths and have caffe-compat installed.

Output: ``part-*.parquet`` shards in DIR, one row per face (``face`` 1, 2, ... as the text output
numbers them) or, for a photo without a face or one that could not be read, one row with
``face`` 0 (``error`` says why it could not be read; unreadable files never fail the run).
Columns: path, face, faces, box and crop_box (x, y, w, h), detection_score, age, age_prob,
age_probs, gender, gender_prob, gender_probs (probabilities in label order; the labels are in
``_run.json``), crop, backend, age_model and gender_model (the nets' file identities), error,
path_bytes (the exact name where it is not UTF-8; ``path`` shows it escaped).
``read_results(DIR)`` gives them as one table; resumability is described in ``scale_output``.

The driver works in three steps: ``plan_run`` (the nets built once here, so bad models fail in
one line before Ray starts; the settings recorded), ``run_plan`` (the photos not yet done,
through the pipeline, in a session from ``scale_session``) and ``report`` (the counts).
What is computed is an ``AppSettings``; how it runs, a ``RayOptions``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CaffeCompatError
from .scale_output import (
    check_settings,
    completed_paths,
    deduplicate,
    read_results,
    read_shard,
    remove_partial,
    run_lock,
    shard_files,
)
from .scale_session import (
    DEFAULT_BLOCK,
    Placement,
    RayOptions,
    placement,
    quiet_ray_data,
    require_ray,
    session,
)
from .scale_sources import list_source
from .scale_stages import AgeGenderWorker, Geometry, NetGroup, find_faces, read_bytes
from .settings import AppSettings

LISTING_BLOCK = 4096
OnProgress = Callable[[int, int], None]

__all__ = ["RayOptions", "ScaleSummary", "predict_dataset", "read_results"]


@dataclass
class ScaleSummary:
    """What a run did (``processed``, ``already_done``) and what DIR now holds (the rest)."""

    output: str
    listed: int = 0  # photos in SOURCE
    processed: int = 0  # photos computed by this run
    already_done: int = 0  # photos of SOURCE that DIR held before this run
    photos: int = 0  # photos in DIR, every run together
    readable: int = 0  # of them, decoded (with or without faces)
    faces: int = 0
    no_face: int = 0
    errors: int = 0
    duplicates_removed: int = 0
    workers: int = 0
    gpu: bool = False
    seconds: float = 0.0
    error_sample: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# What the numbers depend on


def _file_ids(spec: Any) -> str:
    from ..io.identity import file_identity

    parts = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    return " + ".join(f"{os.path.basename(p)} sha256={file_identity(p).sha256}" for p in parts)


def model_identity(task: str, spec: Any) -> str:
    """The released weights' card entry, or the SHA-256 of the files the nets came from."""
    from ..zoo import list_models, load_card
    from .predictor import ZOO_MODELS

    if spec is None or (isinstance(spec, str) and spec in list_models()):
        card = load_card(spec or ZOO_MODELS[task])
        digest = card.weights.git_blob or card.weights.sha256
        return f"{card.name} {card.weights.file} (zoo) {digest}"
    return _file_ids(spec)


def _describe_value(value: Any) -> Any:
    """A JSON form of an option for the settings record (files by identity)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if callable(value):
        return f"callable {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}"
    if isinstance(value, str) and value in ("zoo", "haar", "ssd"):
        return value
    if isinstance(value, (str, os.PathLike)) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, (str, os.PathLike)) for v in value)
    ):
        return _file_ids(value)
    import numpy as np

    array = np.asarray(value, dtype=np.float64)
    return array.round(6).tolist() if array.size <= 16 else f"array {list(array.shape)}"


# --------------------------------------------------------------------------------------------
# Plan: the nets built once here (bad models fail in one line before Ray starts), what each
# worker needs, and the settings record the output folder is held to


@dataclass(frozen=True)
class RunPlan:
    """What the pipeline computes and where it commits it."""

    out_dir: str
    settings: AppSettings  # resolved (crop, back end), absolute paths, no progress bars
    geometries: tuple[Geometry, ...]
    groups: tuple[NetGroup, ...]
    identities: dict[str, str]


def _groups(predictor: Any) -> tuple[tuple[Geometry, ...], tuple[NetGroup, ...]]:
    """Distinct shipping geometries, and the tasks using each."""
    from .scale_stages import geometry_of

    geometries: list[Geometry] = []
    by_geometry: dict[int, list[str]] = {}
    for task in predictor.tasks:
        geometry = geometry_of(predictor, task)
        if geometry not in geometries:
            geometries.append(geometry)
        by_geometry.setdefault(geometries.index(geometry), []).append(task)
    groups = tuple(NetGroup(tuple(tasks), index) for index, tasks in by_geometry.items())
    return tuple(geometries), groups


def _record(plan: RunPlan, predictor: Any, given: AppSettings) -> dict[str, Any]:
    """The settings the numbers depend on, as ``_run.json`` holds them."""
    settings = plan.settings
    detector = given.detector or "haar"
    return {
        "models": plan.identities,
        "labels": {t: list(v) for t, v in predictor.labels.items()},
        "geometry": [dataclasses.asdict(g) for g in plan.geometries],
        "crop": settings.crop,
        "backend": settings.backend,
        "mean": _describe_value(given.mean),
        "mean_crop": settings.mean_crop,
        "detector": "none (whole photo)" if settings.no_detect else _describe_value(detector),
        "confidence": settings.confidence,
        "margin": settings.margin,
    }


def plan_run(out_dir: str, given: AppSettings) -> RunPlan:
    """Build the nets (and the detector) once, here; record the settings in ``out_dir`` or
    refuse a folder computed with others. Call while holding ``run_lock(out_dir)``."""
    from .predictor import Predictor

    if given.check_precision:
        raise CaffeCompatError("check_precision runs with the single-process engine only")
    # on the CPU: the workers choose their own device (RayOptions.device)
    predictor = Predictor(given.with_absolute_paths(), progress=False, device="cpu")
    if not given.no_detect:
        predictor.detector  # noqa: B018  (a bad detector fails now, in one line)
    geometries, groups = _groups(predictor)
    settings = predictor.settings
    identities = {t: model_identity(t, settings.model(t)) for t in settings.models}
    plan = RunPlan(out_dir, settings, geometries, groups, identities)
    check_settings(out_dir, _record(plan, predictor, given))
    return plan


# --------------------------------------------------------------------------------------------
# Run: the photos not yet done, through the Ray Data pipeline


def _dataset(ray: Any, todo: list[str], plan: RunPlan, place: Placement, block: int) -> Any:
    """listing -> read bytes -> faces (CPU tasks) -> nets and shards (actors)."""
    import pyarrow as pa

    # Photos per inference call and shard; small runs still give every worker two calls.
    size = max(1, min(block, math.ceil(len(todo) / (2 * place.workers))))
    # The listing goes into the object store in blocks of up to LISTING_BLOCK paths: Ray Data
    # costs the driver about 3 ms per input block, so 64-path blocks would cost 50 us a photo
    # and large ones 1 us. The CPU tasks still work (and emit) ``size`` photos at a time.
    # Paths travel as bytes: a file name need not be UTF-8.
    span = min(LISTING_BLOCK, max(size, math.ceil(len(todo) / (8 * place.workers))))
    tables = [
        pa.table({"path": pa.array([os.fsencode(p) for p in todo[i : i + span]], pa.binary())})
        for i in range(0, len(todo), span)
    ]
    cpu_task = {"batch_size": size, "batch_format": "pyarrow", "num_cpus": 1}
    actor = {
        "batch_size": size,
        "batch_format": "pyarrow",
        "compute": ray.data.ActorPoolStrategy(size=place.workers),
        "num_cpus": place.actor_cpus,
    }
    if place.gpu:
        actor["num_gpus"] = 1
    worker = {
        "out_dir": plan.out_dir,
        "settings": plan.settings,
        "groups": plan.groups,
        "geometries": plan.geometries,
        "identities": plan.identities,
        "use_gpu": place.gpu,
    }
    faces = {"settings": plan.settings, "geometries": plan.geometries}
    return (
        ray.data.from_arrow(tables)
        .map_batches(read_bytes, fn_kwargs={"max_bytes": plan.settings.max_bytes}, **cpu_task)
        .map_batches(find_faces, fn_kwargs=faces, **cpu_task)
        .map_batches(AgeGenderWorker, fn_constructor_kwargs=worker, **actor)
    )


def _pipeline(ray: Any, dataset: Any, total: int, on_progress: OnProgress | None) -> int:
    """Drive ``dataset`` to the end; the photos it committed."""
    done = 0
    try:
        for counts in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            done += sum(counts.column("photos").to_pylist())
            if on_progress is not None:
                on_progress(done, total)
    except ray.exceptions.RayError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        reason = next(
            (line for line in reversed(lines) if "Error" in line), lines[-1] if lines else ""
        )
        raise CaffeCompatError(f"the Ray job failed: {reason.strip()}") from None
    return done


def run_plan(
    ray: Any,
    source: str | os.PathLike[str],
    plan: RunPlan,
    options: RayOptions,
    summary: ScaleSummary,
    on_progress: OnProgress | None = None,
) -> None:
    """Compute the photos of ``source`` the output folder does not hold yet (Ray starts only
    when there are some); counts into ``summary``."""
    remove_partial(plan.out_dir)
    listing = list_source(source)
    done = completed_paths(plan.out_dir)
    todo = [path for path in listing if path not in done]
    summary.listed, summary.already_done = len(listing), len(listing) - len(todo)
    del done, listing
    if not todo:
        return
    threads = plan.settings.threads or 1
    with session(ray, options, threads, plan.settings.max_pixels) as sized, quiet_ray_data(ray):
        place = placement(ray, options.workers, threads, options.device, sized)
        summary.workers, summary.gpu = place.workers, place.gpu
        dataset = _dataset(ray, todo, plan, place, options.block)
        summary.processed = _pipeline(ray, dataset, len(todo), on_progress)


# --------------------------------------------------------------------------------------------
# Report: what the folder holds


def report(summary: ScaleSummary, sample: int = 10) -> None:
    """Duplicates from retried calls removed, then counts over the folder (after that, each
    photo lives in exactly one shard)."""
    summary.duplicates_removed = deduplicate(summary.output)
    for shard in shard_files(summary.output):
        table = read_shard(shard, ["path", "face", "error"])
        paths = table.column("path").to_pylist()
        faces = table.column("face").to_pylist()
        errors = table.column("error").to_pylist()
        summary.photos += len(set(paths))
        for path, face, error in zip(paths, faces, errors):
            if error is not None:
                summary.errors += 1
                if len(summary.error_sample) < sample:
                    summary.error_sample.append((path, error))
            elif face == 0:
                summary.no_face += 1
            else:
                summary.faces += 1
    summary.readable = summary.photos - summary.errors


# --------------------------------------------------------------------------------------------
# The entry point


def _on_progress(on_progress: OnProgress | None, progress: Any) -> OnProgress | None:
    """``progress=`` was this callback's name before ``on_progress`` (``progress`` is a bool
    everywhere else: whether to draw a bar)."""
    if progress is None or isinstance(progress, bool):  # no bars to draw here
        return on_progress
    if not callable(progress) or on_progress is not None:
        raise TypeError("pass the callback as on_progress(done, total)")
    warnings.warn(
        "predict_dataset(progress=callback) is now on_progress=callback", DeprecationWarning, 3
    )
    return progress


def predict_dataset(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    settings: AppSettings | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    block: int = DEFAULT_BLOCK,
    on_progress: OnProgress | None = None,
    progress: Any = None,
    **overrides: Any,
) -> ScaleSummary:
    """Age and gender of every face in SOURCE (a folder, or a text or Parquet manifest of
    paths) into Parquet shards in ``output_dir``; resumes where a previous run on the same
    folder stopped.

    What is computed: ``settings`` and/or ``overrides`` naming its fields (``models``,
    ``age_model``, ``crop``, ``batch``, ``detector``, ``max_pixels``, ``max_bytes`` ... as
    ``Predictor`` takes them; photos over the limits become error rows). How it runs
    (``RayOptions``): ``address``, ``workers`` (inference actors; default one per GPU, else per
    CPU), ``device`` (``auto``: GPUs when the Ray cluster has them, ``cpu`` or ``cuda``; the
    settings' own ``device`` is not used), ``block`` (photos per inference call and shard);
    ``threads``: intra-op threads of each CPU actor (default: the settings', else 1).
    ``on_progress(done, todo)`` is called as shards are committed (``progress=`` is its old,
    deprecated name)."""
    on_progress = _on_progress(on_progress, progress)
    ray = require_ray()
    options = RayOptions(address, workers, device, block)
    given = AppSettings.build(settings, **overrides)
    if threads is not None or given.threads is None:
        given = dataclasses.replace(given, threads=threads or 1)
    started = time.monotonic()
    summary = ScaleSummary(os.path.abspath(output_dir))
    with run_lock(summary.output):
        plan = plan_run(summary.output, given)
        run_plan(ray, source, plan, options, summary, on_progress)
        report(summary)
    summary.seconds = time.monotonic() - started
    return summary
