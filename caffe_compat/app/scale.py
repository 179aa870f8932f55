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
``_run.json``), crop, backend, age_model and gender_model (the nets' file identities), error.
``read_results(DIR)`` gives them as one table; resumability is described in ``scale_output``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import CaffeCompatError
from .faces import DEFAULT_MARGIN, SSD_CONFIDENCE
from .images import MAX_FILE_BYTES as MAX_BYTES
from .images import MAX_PIXELS, opencv_pixel_limit_env
from .scale_output import (
    check_settings,
    completed_paths,
    deduplicate,
    read_results,
    remove_partial,
    run_lock,
    shard_files,
)
from .scale_sources import list_source
from .scale_stages import AgeGenderWorker, FaceSettings, NetGroup, find_faces, read_bytes

DEFAULT_BLOCK = 64
LISTING_BLOCK = 4096
DEVICES = ("auto", "cpu", "cuda")
RAY_MISSING = (
    "the ray engine needs Ray Data and pyarrow, which are not installed: "
    "pip install 'caffe-compat[ray]'"
)

__all__ = ["ScaleSummary", "predict_dataset", "read_results"]


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


def require_ray() -> Any:
    """The ``ray`` module with Ray Data and pyarrow, or one line saying how to install them."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError:
        raise CaffeCompatError(RAY_MISSING) from None
    return ray


# --------------------------------------------------------------------------------------------
# Settings: absolute paths (workers run elsewhere) and what the numbers depend on


def _absolute(spec: Any) -> Any:
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return os.path.abspath(spec)
    return tuple(os.path.abspath(p) for p in spec)


def _absolute_model(spec: Any) -> Any:
    from ..zoo import list_models

    if isinstance(spec, str) and spec in list_models():
        return spec
    return _absolute(spec)


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
    if isinstance(value, str) and value in ("zoo", "haar"):
        return value
    if isinstance(value, (str, os.PathLike)) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, (str, os.PathLike)) for v in value)
    ):
        return _file_ids(value)
    import numpy as np

    array = np.asarray(value, dtype=np.float64)
    return array.round(6).tolist() if array.size <= 16 else f"array {list(array.shape)}"


# --------------------------------------------------------------------------------------------
# Ray session and resources


class _Plan(NamedTuple):
    workers: int
    gpu: bool
    actor_cpus: float


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _task_slots(workers: int) -> int:
    """Logical CPUs for the decode/detect tasks beside ``workers`` one-core CPU actors in local
    mode: as many again. Detection costs 0.4 to 0.7 of the nets' time per photo depending on the
    photo and crop mode (benchmarks/bench_scale.py), so fewer slots can starve the actors; the
    extra logical CPUs share the same cores, and the OS gives the cores to whichever side has
    work."""
    return max(1, workers)


@contextlib.contextmanager
def _session(
    ray: Any, address: str | None, workers: int | None, threads: int, max_pixels: int
) -> Iterator[int | None]:
    """Join ``address``, or start Ray here (logical CPUs: the workers' threads plus slots for
    the CPU tasks); leave a session the caller started as it is. A session started here gives
    its workers OpenCV's own pixel limit, the backstop for headers ``image_size`` cannot read
    (a job-wide environment: per-task ones would start fresh worker processes on every run).
    Yields the number of CPU workers a local session was sized for (None otherwise)."""
    if ray.is_initialized():
        yield workers
        return
    common = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "runtime_env": {"env_vars": opencv_pixel_limit_env(max_pixels)},
    }
    count = workers
    if address:
        ray.init(address=address, **common)
    else:
        count = workers or _cpu_count()
        ray.init(num_cpus=count * threads + _task_slots(count), **common)
    try:
        yield count
    finally:
        ray.shutdown()


def _plan(
    ray: Any, workers: int | None, threads: int, device: str, sized: int | None = None
) -> _Plan:
    """Actors and their resources: ``workers`` if given; else one per GPU, else ``sized`` (what
    a local session was started for), else half the CPUs (the other half for the CPU tasks)."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if device == "cuda" and gpus == 0:
        raise CaffeCompatError("device cuda: the Ray cluster has no GPU")
    if gpus and device != "cpu":
        count = workers or gpus
        if count + 1 > cpus:
            raise CaffeCompatError(
                f"{count} GPU workers need {count + 1} CPUs (one each, one for decoding); the "
                f"Ray cluster has {cpus}"
            )
        return _Plan(count, True, 1.0)
    count = workers or sized or max(1, cpus // 2 // threads)
    if count * threads + 1 > cpus:
        raise CaffeCompatError(
            f"{count} workers of {threads} thread(s) need {count * threads + 1} CPUs (one more "
            f"for decoding and detection); the Ray cluster has {cpus}"
        )
    return _Plan(count, False, float(threads))


@contextlib.contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """No Ray Data progress bars or log lines for this run (the caller gets ``progress``)."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars
    logger = logging.getLogger("ray.data")
    level = logger.level
    context.enable_progress_bars = False
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars = saved
        logger.setLevel(level)


# --------------------------------------------------------------------------------------------
# The run


def _pipeline(
    ray: Any,
    todo: list[str],
    out_dir: str,
    plan: _Plan,
    faces: FaceSettings,
    groups: list[NetGroup],
    identities: dict[str, str],
    threads: int,
    block: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    import pyarrow as pa

    # Photos per inference call and shard; small runs still give every worker two calls.
    size = max(1, min(block, math.ceil(len(todo) / (2 * plan.workers))))
    # The listing goes into the object store in blocks of up to LISTING_BLOCK paths: Ray Data
    # costs the driver about 3 ms per input block, so 64-path blocks would cost 50 us a photo
    # and large ones 1 us. The CPU tasks still work (and emit) ``size`` photos at a time.
    span = min(LISTING_BLOCK, max(size, math.ceil(len(todo) / (8 * plan.workers))))
    tables = [
        pa.table({"path": pa.array(todo[i : i + span], pa.string())})
        for i in range(0, len(todo), span)
    ]
    cpu_task = {"batch_size": size, "batch_format": "pyarrow", "num_cpus": 1}
    actor = {
        "batch_size": size,
        "batch_format": "pyarrow",
        "compute": ray.data.ActorPoolStrategy(size=plan.workers),
        "num_cpus": plan.actor_cpus,
    }
    if plan.gpu:
        actor["num_gpus"] = 1
    dataset = (
        ray.data.from_arrow(tables)
        .map_batches(read_bytes, fn_kwargs={"max_bytes": faces.max_bytes}, **cpu_task)
        .map_batches(find_faces, fn_kwargs={"settings": faces}, **cpu_task)
        .map_batches(
            AgeGenderWorker,
            fn_constructor_kwargs={
                "out_dir": out_dir,
                "groups": groups,
                "geometries": faces.geometries,
                "identities": identities,
                "threads": threads,
                "use_gpu": plan.gpu,
            },
            **actor,
        )
    )
    done = 0
    try:
        for counts in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            done += sum(counts.column("photos").to_pylist())
            if progress is not None:
                progress(done, len(todo))
    except ray.exceptions.RayError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        reason = next(
            (line for line in reversed(lines) if "Error" in line), lines[-1] if lines else ""
        )
        raise CaffeCompatError(f"the Ray job failed: {reason.strip()}") from None
    return done


def _totals(summary: ScaleSummary, sample: int = 10) -> None:
    """Counts over DIR (after ``deduplicate``, each photo lives in exactly one shard)."""
    for shard in shard_files(summary.output):
        table = _count_columns(shard)
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


def _count_columns(shard: Any) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(shard, columns=["path", "face", "error"])


def predict_dataset(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    device: str = "auto",
    block: int = DEFAULT_BLOCK,
    models: Sequence[str] | str = ("age", "gender"),
    backend: str | None = None,
    age_model: Any = None,
    gender_model: Any = None,
    age_labels: Sequence[str] | None = None,
    gender_labels: Sequence[str] | None = None,
    crop: str | None = None,
    mean: Any = None,
    mean_crop: str = "window",
    detector: Any = None,
    confidence: float = SSD_CONFIDENCE,
    margin: float = DEFAULT_MARGIN,
    batch: int = 16,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    precision: str | None = None,
    no_detect: bool = False,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> ScaleSummary:
    """Age and gender of every face in SOURCE (a folder, or a text or Parquet manifest of
    paths) into Parquet shards in ``output_dir``; resumes where a previous run on the same
    folder stopped. ``workers``: inference actors (default: one per GPU, else per CPU);
    ``threads``: intra-op threads of each CPU actor; ``device``: ``auto`` (GPUs when the Ray
    cluster has them), ``cpu`` or ``cuda``; ``block``: photos per inference call and shard;
    ``max_pixels`` / ``max_bytes``: larger files are refused (error rows). The model options
    are ``Predictor``'s. ``progress(done, todo)`` is called as shards are committed."""
    from .predictor import Predictor, parse_models

    ray = require_ray()
    if device not in DEVICES:
        raise CaffeCompatError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    for name, value in (("workers", workers), ("threads", threads), ("block", block)):
        if value is not None and value < 1:
            raise CaffeCompatError(f"{name} must be at least 1, got {value}")
    started = time.monotonic()
    out_dir = os.path.abspath(output_dir)
    summary = ScaleSummary(out_dir)
    tasks = parse_models(models)
    options: dict[str, Any] = {
        "backend": backend,
        "crop": crop,
        "mean": _absolute(mean) if isinstance(mean, (str, os.PathLike)) and mean != "zoo" else mean,
        "mean_crop": mean_crop,
        "batch": batch,
        "cache_dir": _absolute(cache_dir),
        "download": download,
        "precision": precision,
    }
    for task, spec, labels in (
        ("age", age_model, age_labels),
        ("gender", gender_model, gender_labels),
    ):
        if task in tasks:
            options[f"{task}_model"] = _absolute_model(spec)
            options[f"{task}_labels"] = tuple(labels) if labels is not None else None
    named = detector in (None, "haar", "ssd", ("haar",), ("ssd",))
    detector = detector if named or callable(detector) else _absolute(detector)
    with run_lock(out_dir):
        # Build the nets here once: bad models fail now, in one line, before Ray starts.
        predictor = Predictor(models=tasks, **options, progress=False)
        options["crop"], options["backend"] = predictor.crop, predictor.backend
        geometries, groups = _groups(predictor, tasks, options)
        identities = {t: model_identity(t, options[f"{t}_model"]) for t in tasks}
        check_settings(
            out_dir,
            {
                "models": identities,
                "labels": {t: list(v) for t, v in predictor.labels.items()},
                "geometry": [dataclasses.asdict(g) for g in geometries],
                "crop": predictor.crop,
                "backend": predictor.backend,
                "mean": _describe_value(mean),
                "mean_crop": mean_crop,
                "detector": "none (whole photo)"
                if no_detect
                else _describe_value(detector or "haar"),
                "confidence": confidence,
                "margin": margin,
            },
        )
        del predictor
        faces = FaceSettings(
            detector=detector,
            confidence=confidence,
            backend=options["backend"],
            margin=margin,
            no_detect=no_detect,
            max_pixels=max_pixels,
            max_bytes=max_bytes,
            geometries=geometries,
        )
        remove_partial(out_dir)
        listing = list_source(source)
        done = completed_paths(out_dir)
        todo = [path for path in listing if path not in done]
        summary.listed, summary.already_done = len(listing), len(listing) - len(todo)
        del done, listing
        if todo:
            session = _session(ray, address, workers, threads, max_pixels)
            with session as sized, _quiet_ray_data(ray):
                plan = _plan(ray, workers, threads, device, sized)
                summary.workers, summary.gpu = plan.workers, plan.gpu
                summary.processed = _pipeline(
                    ray, todo, out_dir, plan, faces, groups, identities, threads, block, progress
                )
        summary.duplicates_removed = deduplicate(out_dir)
        _totals(summary)
    summary.seconds = time.monotonic() - started
    return summary


def _groups(
    predictor: Any, tasks: Sequence[str], options: dict[str, Any]
) -> tuple[tuple[Any, ...], list[NetGroup]]:
    """Distinct shipping geometries, and the tasks (with their Predictor options) using each."""
    from .scale_stages import geometry_of

    geometries: list[Any] = []
    by_geometry: dict[int, list[str]] = {}
    for task in tasks:
        geometry = geometry_of(predictor, task)
        if geometry not in geometries:
            geometries.append(geometry)
        by_geometry.setdefault(geometries.index(geometry), []).append(task)
    groups = []
    for index, members in by_geometry.items():
        mine = {k: v for k, v in options.items() if not k.startswith(("age_", "gender_"))}
        for task in members:
            mine[f"{task}_model"] = options[f"{task}_model"]
            mine[f"{task}_labels"] = options[f"{task}_labels"]
        groups.append(NetGroup(tuple(members), index, mine))
    return tuple(geometries), groups
