"""Age and gender from photos: what the Levi-Hassner models were released for.

``predict(image)`` finds the faces in a photo (OpenCV's Haar cascade unless a converted SSD
detector is given), cuts each out with a margin, preprocesses it in a named mode (10-crop
over-sampling by default, as in the paper) and runs the age and gender nets on either back end:
``torch`` (our CaffeNet) or ``onnx`` (ONNX Runtime on our exported model). The nets come from the
zoo (``load_pretrained``), from a user's prototxt and weights (released, fine-tuned or
synthesized; converted in memory) or from an ``.onnx`` file we exported. Every result records the
crop mode and back end that produced it.

``Predictor`` holds the models for many photos (faces are batched across photos); ``predict``
is the one-call form and keeps the last ``Predictor`` it built for the same options.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import CaffeCompatError, Remedy
from .faces import Box, Detection, FaceDetector, cut, locate
from .images import read_image
from .precision import resolve_precision
from .preprocess import MODES, preprocess
from .runners import RUNTIMES, Runner, is_onnx_path, load_runner, onnx_runner, torch_runner
from .settings import DEFAULT_BATCH, TASKS, AppSettings, ModelSpec, parse_models

ZOO_MODELS = {"age": "levi_hassner_age", "gender": "levi_hassner_gender"}


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class FacePrediction:
    """One face: where it is, what the nets say, and how that was computed.

    ``box`` is the detector's box ``(x, y, w, h)`` in the photo; ``crop_box`` the region the nets
    saw (the box plus the margin, clamped to the photo). Age or gender fields are None when that
    model was not run. ``*_probs`` hold the averaged probability of every label, in label order.
    """

    box: Box
    crop_box: Box
    crop: str
    backend: str
    face: int = 1  # number of the face in its photo, 1-based, detector order (as printed)
    path: str | None = None
    detection_score: float | None = None
    age: str | None = None
    age_prob: float | None = None
    age_top2: tuple[tuple[str, float], ...] = ()
    age_probs: tuple[float, ...] = ()
    gender: str | None = None
    gender_prob: float | None = None
    gender_probs: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists."""
        return json.loads(json.dumps(asdict(self)))


# --------------------------------------------------------------------------------------------
# Task nets and the predictor


@dataclass
class TaskNet:
    """One task's net with what its inputs need: labels, mean, resize and input size. (Not
    pycaffe's ``Classifier``, which is Caffe's.)"""

    task: str
    runner: Runner
    labels: tuple[str, ...]
    mean: np.ndarray  # (3,) values or (3, H, W) image, BGR
    mean_crop: str
    size: int
    crop_size: int
    source: str
    precision: str = "exact"
    twin: Runner | None = None  # the same net in exact mode, for --check-precision

    def prep_key(self) -> tuple:
        return (self.mean.tobytes(), self.mean.shape, self.mean_crop, self.size, self.crop_size)


def _task_card(task: str) -> Any:
    from ..zoo import load_card

    return load_card(ZOO_MODELS[task])


def _mean_for(card: Any, mean: Any, cache_dir: Any, download: bool) -> np.ndarray:
    """None: the card's per-channel values; "zoo": the released mean image; a path: a
    binaryproto; else 3 values or a 3 x H x W array."""
    if mean is None:
        return np.asarray(card.mean_values, dtype=np.float32)
    if isinstance(mean, str) and mean == "zoo":
        from .pretrained import mean_image

        return np.asarray(mean_image(card, cache_dir=cache_dir, download=download), np.float32)
    if isinstance(mean, (str, os.PathLike)):
        from ..io import read_mean

        return np.asarray(read_mean(mean), dtype=np.float32)
    array = np.asarray(mean, dtype=np.float32)
    if array.shape != (3,) and not (array.ndim == 3 and array.shape[0] == 3):
        raise CaffeCompatError(f"mean must be 3 values or 3 x H x W, got {list(array.shape)}")
    return array


def _spec_parts(spec: ModelSpec) -> list[str]:
    if isinstance(spec, (str, os.PathLike)):
        return [os.fspath(spec)]
    return [os.fspath(p) for p in spec]


class Predictor:
    """Age and gender models on one back end, a face detector and the preprocessing settings.

    Built from an ``AppSettings`` (``Predictor(settings)``), from keywords naming its fields
    (``Predictor(backend="onnx", crop="center")``), or both (the keywords override the
    settings' fields: ``Predictor(settings, models=("age",))``). ``settings`` then holds the
    values in force, the back end and crop mode resolved.

    Models (``age_model`` / ``gender_model``): None for the zoo's released weights (through
    ``load_pretrained``: they must be in the cache, or ``download=True``), a zoo name,
    ``"MODEL.onnx"`` (exported by caffe-compat; runs on ONNX Runtime) or ``(PROTOTXT, WEIGHTS)``
    (converted in memory; any weights in the architecture, e.g. fine-tuned or synthesized).
    Labels come from the zoo card (or an .onnx file's metadata) unless ``age_labels`` /
    ``gender_labels`` say otherwise. ``backend`` None picks ``onnx`` when an .onnx model is given,
    else ``torch``.

    Preprocessing: ``crop`` one of ``preprocess.MODES`` (default: the card's, over-sampling);
    ``mean`` None for the card's per-channel values (B, G, R), ``"zoo"`` for the released mean
    image (fetched like the weights), a .binaryproto path, or values; ``mean_crop`` how a mean
    image meets the crops (``preprocess``). Each face is the detector's box grown by ``margin``
    (0.4: 40 % of the box width/height on every side, clamped to the photo).

    Detection: ``detector`` None for OpenCV's Haar frontal-face cascade where OpenCV has it
    (4.x) and the zoo's res10 SSD face detector otherwise (its weights fetched like the nets'),
    ``"haar"`` or ``"ssd"`` to choose, a callable ``image -> list[Detection]``, or an SSD face
    detector as ``MODEL.onnx`` or ``(PROTOTXT, CAFFEMODEL)`` (res10 300x300 kind) keeping boxes
    scoring at least ``confidence``; ``no_detect`` makes each photo one face (the default of
    ``predict``'s own ``no_detect``).
    ``batch``: faces per net call (each face is 10 net inputs when over-sampling). ``threads``:
    intra-op threads of each net call (None: ONNX Runtime's and PyTorch's defaults, all cores).
    ``max_bytes`` / ``max_pixels``: the limits photos given by path are read under.
    """

    def __init__(self, settings: AppSettings | None = None, **overrides: Any) -> None:
        settings = AppSettings.build(settings, **overrides)
        tasks = settings.models
        backend = settings.backend
        if backend is None:
            onnx = any(is_onnx_path(settings.model(t)) for t in tasks)
            backend = "onnx" if onnx else "torch"
        self.settings = dataclasses.replace(settings, backend=backend)
        # task -> [faces whose argmax agrees with exact mode, faces compared]
        self.precision_agreement: dict[str, list[int]] = {}
        self._detector: FaceDetector | None = None
        self.classifiers: dict[str, TaskNet] = {t: self._task_net(t) for t in tasks}
        crop = settings.crop or _task_card(tasks[0]).default_mode
        self.settings = dataclasses.replace(self.settings, crop=crop)

    # -- the settings in force -----------------------------------------------------------

    @property
    def backend(self) -> str:
        return str(self.settings.backend)

    @property
    def crop(self) -> str:
        return str(self.settings.crop)

    @property
    def batch(self) -> int:
        return self.settings.batch

    @property
    def margin(self) -> float:
        return self.settings.margin

    @property
    def device(self) -> str:
        return self.settings.device

    @property
    def threads(self) -> int | None:
        return self.settings.threads

    @property
    def mean_crop(self) -> str:
        return self.settings.mean_crop

    # -- construction --------------------------------------------------------------------

    def _task_net(self, task: str) -> TaskNet:
        """``task``'s net loaded on the back end, with its labels, mean and input geometry."""
        from ..zoo import list_models

        settings = self.settings
        spec, labels = settings.model(task), settings.labels(task)
        card = _task_card(task)
        if spec is None or (isinstance(spec, str) and spec in list_models()):
            runner, mode, twin, card = self._zoo_runner(spec, card)
        else:
            runner, mode, twin = self._file_runner(task, spec, card)
        names = tuple(labels) if labels is not None else (runner.labels or card.labels)
        if runner.output_width is not None and runner.output_width != len(names):
            raise CaffeCompatError(
                f"the {task} net gives {runner.output_width} outputs per face but has "
                f"{len(names)} labels",
                path=runner.source,
                remedy=Remedy("labels", value=task, purpose="to name them"),
            )
        crop_size = 227
        if runner.input_hw is not None:
            height, width = runner.input_hw
            if height != width:
                raise CaffeCompatError(
                    f"the {task} net takes {height}x{width} inputs; crops are square",
                    path=runner.source,
                )
            crop_size = height
        return TaskNet(
            task,
            runner,
            names,
            _mean_for(card, settings.mean, settings.cache_dir, settings.download),
            settings.mean_crop,
            max(card.input.resize, crop_size),
            crop_size,
            runner.source,
            mode,
            twin,
        )

    def _zoo_runner(self, spec: str | None, card: Any) -> tuple[Runner, str, Runner | None, Any]:
        """Released weights through ``load_pretrained`` (``spec`` a zoo name, or None for the
        task's card): the runner, its numeric mode, the exact-mode twin, the card."""
        from ..zoo import load_card
        from .pretrained import load_pretrained

        settings = self.settings
        if spec is not None:
            card = load_card(spec)
        options = {
            "cache_dir": settings.cache_dir,
            "download": settings.download,
            "backend": self.backend,
            "device": self.device,
            "progress": settings.progress,
        }
        model = load_pretrained(card, precision=settings.precision, **options)
        source = f"{card.name} (zoo, released weights)"
        if self.backend != "torch":
            serialized = model.SerializeToString()
            runner = onnx_runner(serialized, card.output, source, self.device, self.threads)
            return runner, "exact", None, card
        runner = torch_runner(model, card.output, source, self.device, threads=self.threads)
        twin = None
        if settings.check_precision and model.precision != "exact":
            exact = load_pretrained(card, precision="exact", **options)
            twin = torch_runner(exact, card.output, source, self.device, threads=self.threads)
        return runner, model.precision, twin, card

    def _file_runner(
        self, task: str, spec: ModelSpec, card: Any
    ) -> tuple[Runner, str, Runner | None]:
        """A net from the user's files (``MODEL.onnx`` or ``(PROTOTXT, WEIGHTS)``)."""
        parts = _spec_parts(spec)
        if len(parts) not in (1, 2):
            raise CaffeCompatError(
                f"a {task} model is MODEL.onnx or (PROTOTXT, WEIGHTS), got {len(parts)} paths"
            )
        settings = self.settings
        mode = resolve_precision(settings.precision, backend=self.backend, device=self.device)
        files = (parts[0], parts[1] if len(parts) == 2 else None)
        options = {
            "backend": self.backend,
            "device": self.device,
            "output": card.output,
            "threads": self.threads,
        }
        runner = load_runner(*files, precision=mode, **options)
        twin = None
        if settings.check_precision and mode != "exact":
            twin = load_runner(*files, precision="exact", **options)
        return runner, mode, twin

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.classifiers)

    @property
    def labels(self) -> dict[str, tuple[str, ...]]:
        return {task: c.labels for task, c in self.classifiers.items()}

    def describe(self, crop: str | None = None) -> dict[str, str]:
        """Per task: the model's source, back end and the full preprocessing description."""
        crop = crop or self.crop
        out = {}
        for task, c in self.classifiers.items():
            prepared = self._prepare(c, [np.zeros((1, 1, 3), np.uint8)], crop)
            out[task] = f"{c.source} on {self.backend}; {prepared.description}"
        return out

    # -- detection -----------------------------------------------------------------------

    @property
    def detector(self) -> FaceDetector:
        """Built on first use, so runs without detection never load a cascade or a net."""
        if self._detector is None:
            self._detector = self.settings.build_detector(self.device)
        return self._detector

    def detect(self, image: np.ndarray) -> list[Detection]:
        return list(self.detector(image))

    # -- classification ------------------------------------------------------------------

    def _prepare(self, net: TaskNet, faces: Sequence[np.ndarray], crop: str) -> Any:
        return preprocess(
            list(faces),
            crop,
            mean=net.mean,
            mean_crop=net.mean_crop,
            size=net.size,
            crop=net.crop_size,
        )

    def _prepare_all(self, faces: Sequence[np.ndarray], crop: str) -> dict[tuple, Any]:
        """One preprocessed batch per distinct preprocessing (usually one for both nets)."""
        prepared: dict[tuple, Any] = {}
        for classifier in self.classifiers.values():
            key = classifier.prep_key()
            if key not in prepared:
                prepared[key] = self._prepare(classifier, faces, crop)
        return prepared

    def _run(self, classifier: TaskNet, data: np.ndarray, crops: int) -> np.ndarray:
        """Probabilities per face (faces x labels), ``batch`` faces per net call."""
        step = self.batch * crops
        outs = [
            classifier.runner(np.ascontiguousarray(data[i : i + step]))
            for i in range(0, data.shape[0], step)
        ]
        probs = np.concatenate(outs).reshape(data.shape[0], -1)
        if probs.shape[1] != len(classifier.labels):
            raise CaffeCompatError(
                f"the {classifier.task} net gives {probs.shape[1]} outputs per face but has "
                f"{len(classifier.labels)} labels",
                path=classifier.runner.source,
            )
        faces = probs.reshape(-1, crops, probs.shape[1]).mean(axis=1)
        if classifier.twin is not None:
            exact = (
                np.concatenate(
                    [
                        classifier.twin(np.ascontiguousarray(data[i : i + step]))
                        for i in range(0, data.shape[0], step)
                    ]
                )
                .reshape(-1, crops, probs.shape[1])
                .mean(axis=1)
            )
            tally = self.precision_agreement.setdefault(classifier.task, [0, 0])
            tally[0] += int((exact.argmax(axis=1) == faces.argmax(axis=1)).sum())
            tally[1] += len(faces)
        return faces

    def classify(self, faces: Sequence[np.ndarray], crop: str | None = None) -> dict[str, Any]:
        """Probabilities per task (faces x labels) for face crops (BGR, any size), ``crop``
        mode (default ``self.crop``); no detection."""
        crop = crop or self.crop
        if crop not in MODES:
            raise CaffeCompatError(f"unknown crop mode {crop!r}; modes: {', '.join(MODES)}")
        if not faces:
            return {
                t: np.zeros((0, len(c.labels)), np.float32) for t, c in self.classifiers.items()
            }
        out = {}
        for start in range(0, len(faces), self.batch):
            chunk = faces[start : start + self.batch]
            prepared = self._prepare_all(chunk, crop)
            for task, c in self.classifiers.items():
                p = prepared[c.prep_key()]
                out.setdefault(task, []).append(self._run(c, p.data, p.crops))
        return {task: np.concatenate(parts) for task, parts in out.items()}

    # -- photos --------------------------------------------------------------------------

    def _locate(self, image: np.ndarray, no_detect: bool) -> list[tuple[Detection, Box]]:
        return locate(image, None if no_detect else self.detector, self.margin)

    def predict_many(
        self,
        items: Iterable[tuple[Any, np.ndarray]],
        *,
        no_detect: bool | None = None,
        stream: bool = False,
    ) -> Iterator[tuple[Any, list[FacePrediction]]]:
        """``(key, image)`` pairs -> ``(key, faces)`` in the same order; a str or path key is
        recorded as the faces' ``path``. Each face is preprocessed as soon as it is found, so no
        photo is held longer than its own step.

        Batching: by default faces of several photos share net calls (up to ``batch`` faces), so
        results come out in groups. ``stream=True`` runs the nets as soon as a photo's faces
        are found (they still share one call), so each photo's result is out before the next
        photo is read: what a person watching the output, or a pipe, wants. The cost is
        throughput only where the nets gain from batches larger than one photo's faces (a GPU,
        or single-crop modes); with 10-crop over-sampling one face is already 10 inputs.
        ``no_detect`` None: the settings' (``no_detect=True``: each photo is one face)."""
        if no_detect is None:
            no_detect = self.settings.no_detect
        pending: list[tuple[Any, list[tuple[Detection, Box]]]] = []
        parts: dict[tuple, list[np.ndarray]] = {}
        crops_per_face: dict[tuple, int] = {}
        count = 0
        for key, image in items:
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
                raise CaffeCompatError(
                    f"expected an H x W x 3 BGR image, got shape {list(np.shape(image))}",
                    path=str(key) if isinstance(key, (str, os.PathLike)) else None,
                )
            located = self._locate(image, no_detect)
            pending.append((key, located))
            if located:
                faces = [cut(image, crop_box) for _, crop_box in located]
                for prep_key, prepared in self._prepare_all(faces, self.crop).items():
                    parts.setdefault(prep_key, []).append(prepared.data)
                    crops_per_face[prep_key] = prepared.crops
                count += len(located)
            if count >= self.batch or stream:
                yield from self._finish(pending, parts, crops_per_face)
                pending, parts, count = [], {}, 0
        if pending:
            yield from self._finish(pending, parts, crops_per_face)

    def _finish(
        self,
        pending: list[tuple[Any, list[tuple[Detection, Box]]]],
        parts: dict[tuple, list[np.ndarray]],
        crops_per_face: dict[tuple, int],
    ) -> Iterator[tuple[Any, list[FacePrediction]]]:
        probs: dict[str, np.ndarray] = {}
        for task, c in self.classifiers.items():
            key = c.prep_key()
            if parts.get(key):
                probs[task] = self._run(c, np.concatenate(parts[key]), crops_per_face[key])
        row = 0
        for key, located in pending:
            path = os.fspath(key) if isinstance(key, (str, os.PathLike)) else None
            found = []
            for index, (detection, crop_box) in enumerate(located):
                face = FacePrediction(
                    box=detection.box,
                    crop_box=crop_box,
                    crop=self.crop,
                    backend=self.backend,
                    face=index + 1,
                    path=path,
                    detection_score=detection.score,
                )
                for task, values in probs.items():
                    _fill(face, task, values[row], self.classifiers[task].labels)
                found.append(face)
                row += 1
            yield key, found

    def predict(
        self,
        image: np.ndarray | str | os.PathLike[str],
        *,
        no_detect: bool | None = None,
    ) -> list[FacePrediction]:
        """The faces of one photo (a path, read under the settings' limits, or an H x W x 3 BGR
        uint8 array)."""
        if isinstance(image, (str, os.PathLike)):
            key: Any = os.fspath(image)
            image = read_image(image, **self.settings.photo_limits())
        else:
            key = None
        return next(iter(self.predict_many([(key, image)], no_detect=no_detect)))[1]


def _fill(face: FacePrediction, task: str, probs: np.ndarray, labels: Sequence[str]) -> None:
    order = np.argsort(-probs, kind="stable")
    values = tuple(float(p) for p in probs)
    best = int(order[0])
    if task == "age":
        face.age, face.age_prob, face.age_probs = labels[best], values[best], values
        face.age_top2 = tuple((labels[int(i)], values[int(i)]) for i in order[:2])
    else:
        face.gender, face.gender_prob, face.gender_probs = labels[best], values[best], values


# --------------------------------------------------------------------------------------------
# One-call form


_last: tuple[Any, Predictor] | None = None


def _file_stamp(value: Any) -> Any:
    """Part of the predictor cache key: file arguments count with their size and mtime, so a
    rewritten weights file is never answered by the old nets."""
    if isinstance(value, (str, os.PathLike)):
        try:
            stat = os.stat(value)
        except OSError:
            return os.fspath(value)
        return (os.fspath(value), stat.st_size, stat.st_mtime_ns)
    if isinstance(value, (list, tuple)):
        return tuple(_file_stamp(v) for v in value)
    return value


def _cache_key(settings: AppSettings) -> Any:
    key = tuple((name, _file_stamp(value)) for name, value in settings.items())
    try:
        hash(key)
    except TypeError:
        return None  # arrays, callables with state...: build afresh
    return key


def predict(
    image: np.ndarray | str | os.PathLike[str],
    settings: AppSettings | None = None,
    **options: Any,
) -> list[FacePrediction]:
    """Faces with age and gender in one photo (a path, or an H x W x 3 BGR uint8 array).

    ``settings`` and ``options`` as ``Predictor`` takes them (``backend``, ``age_model``,
    ``gender_model``, ``crop``, ``batch``, ``detector``, ``margin``, ``cache_dir``,
    ``download``, ``no_detect``...). The last Predictor built is kept and reused while the
    settings (and the files they name) stay the same; hold a ``Predictor`` yourself for full
    control.
    """
    global _last
    no_detect = options.pop("no_detect", None)
    settings = AppSettings.build(settings, **options)
    key = _cache_key(settings)
    if key is not None and _last is not None and _last[0] == key:
        predictor = _last[1]
    else:
        predictor = Predictor(settings)
        _last = (key, predictor) if key is not None else None
    return predictor.predict(image, no_detect=no_detect)


def __getattr__(name: str) -> Any:
    if name == "Classifier":  # the name before TaskNet; pycaffe's Classifier is Caffe's
        import warnings

        warnings.warn("app.predictor.Classifier is now TaskNet", DeprecationWarning, 2)
        return TaskNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_BATCH",
    "RUNTIMES",
    "TASKS",
    "AppSettings",
    "FacePrediction",
    "Predictor",
    "TaskNet",
    "parse_models",
    "predict",
]
