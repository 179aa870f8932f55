"""The application's options, declared once: which nets, how faces are found and cut, how they are
preprocessed and batched, on which back end, and the limits every photo is read under.

``AppSettings`` is frozen and checked when built, so the command line, ``Predictor``, the Ray
engine's stages and ``evaluate_adience`` all hold the same validated values; a variant is a
``dataclasses.replace`` (or ``AppSettings.build(settings, **overrides)``), never a mutation.
Models are ``ModelSpec`` values: None for the zoo's released weights, a zoo name, ``MODEL.onnx``
or ``(PROTOTXT, WEIGHTS)``.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..errors import CaffeCompatError
from .faces import (
    DEFAULT_MARGIN,
    DETECTOR_NAMES,
    SSD_CONFIDENCE,
    FaceDetector,
    make_detector,
)
from .images import MAX_FILE_BYTES, MAX_PIXELS
from .preprocess import MEAN_CROPS, MODES
from .runners import RUNTIMES

TASKS = ("age", "gender")
DEFAULT_BATCH = 16

ModelSpec = Any  # None | zoo name | "MODEL.onnx" | (PROTOTXT, WEIGHTS)


def parse_models(models: Sequence[str] | str) -> tuple[str, ...]:
    """``"age,gender"`` or a sequence -> the tasks, in TASKS order, each at most once."""
    names = models.split(",") if isinstance(models, str) else list(models)
    names = [n.strip() for n in names if isinstance(n, str) and n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise CaffeCompatError(
            f"models are {' and/or '.join(TASKS)} (comma-separated), got {','.join(names) or '-'}"
        )
    return tuple(t for t in TASKS if t in names)


def _paths(spec: Any) -> Any:
    """A list of paths becomes a tuple (hashable, and equal to the same tuple)."""
    if isinstance(spec, list):
        return tuple(spec)
    return spec


def _detector(spec: Any) -> Any:
    """``("haar",)`` (a command line's one word) is ``"haar"``; lists become tuples."""
    spec = _paths(spec)
    if isinstance(spec, tuple) and len(spec) == 1 and spec[0] in DETECTOR_NAMES:
        return spec[0]
    return spec


@dataclass(frozen=True)
class AppSettings:
    """Everything the age and gender application is told; see ``Predictor`` for each field.

    Models: ``models`` (tasks to run), ``age_model`` / ``gender_model`` (``ModelSpec``),
    ``age_labels`` / ``gender_labels``, ``backend`` (None: ``onnx`` for an .onnx model, else
    ``torch``), ``device``, ``precision``, ``check_precision``, ``threads`` (intra-op threads per
    net call), ``cache_dir``, ``download``, ``progress`` (draw download bars).
    Faces: ``detector``, ``confidence`` (SSD), ``margin``, ``no_detect`` (the whole photo is the
    face). Preprocessing: ``crop`` (a ``preprocess.MODES`` name; None: the card's), ``mean``,
    ``mean_crop``, ``batch`` (faces per net call). Photo limits: ``max_bytes``, ``max_pixels``.
    """

    models: tuple[str, ...] = TASKS
    age_model: ModelSpec = None
    gender_model: ModelSpec = None
    age_labels: tuple[str, ...] | None = None
    gender_labels: tuple[str, ...] | None = None
    backend: str | None = None
    device: str = "cpu"
    precision: str | None = None
    check_precision: bool = False
    threads: int | None = None
    cache_dir: str | os.PathLike[str] | None = None
    download: bool = False
    progress: bool = True
    detector: Any = None
    confidence: float = SSD_CONFIDENCE
    margin: float = DEFAULT_MARGIN
    no_detect: bool = False
    crop: str | None = None
    mean: Any = None
    mean_crop: str = "window"
    batch: int = DEFAULT_BATCH
    max_bytes: int = MAX_FILE_BYTES
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        normal = {
            "models": parse_models(self.models),
            "age_model": _paths(self.age_model),
            "gender_model": _paths(self.gender_model),
            "age_labels": None if self.age_labels is None else tuple(self.age_labels),
            "gender_labels": None if self.gender_labels is None else tuple(self.gender_labels),
            "detector": _detector(self.detector),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        if self.backend is not None and self.backend not in RUNTIMES:
            raise CaffeCompatError(
                f"backend must be one of {', '.join(RUNTIMES)}, not {self.backend!r}"
            )
        for name in ("batch", "max_bytes", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise CaffeCompatError(f"{name} must be at least 1, got {value!r}")
        if self.threads is not None and self.threads < 1:
            raise CaffeCompatError(f"threads must be at least 1, got {self.threads}")
        if not self.margin >= 0:
            raise CaffeCompatError(f"margin must be 0 or more, got {self.margin}")
        if self.crop is not None and self.crop not in MODES:
            raise CaffeCompatError(f"unknown crop mode {self.crop!r}; modes: {', '.join(MODES)}")
        if self.mean_crop not in MEAN_CROPS:
            raise CaffeCompatError(
                f"mean_crop must be one of {', '.join(MEAN_CROPS)}, not {self.mean_crop!r}"
            )

    @classmethod
    def build(cls, settings: AppSettings | None = None, **overrides: Any) -> AppSettings:
        """``settings`` (default: all defaults) with ``overrides`` applied; an unknown name is
        one line listing the known ones."""
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(
                f"unknown setting(s) {', '.join(unknown)}; settings are "
                f"{', '.join(f.name for f in fields(cls))}"
            )
        if settings is None:
            return cls(**overrides)
        if not isinstance(settings, AppSettings):
            raise TypeError(f"settings must be an AppSettings, not {type(settings).__name__}")
        return dataclasses.replace(settings, **overrides) if overrides else settings

    def model(self, task: str) -> ModelSpec:
        """The ``ModelSpec`` of ``task``."""
        return getattr(self, f"{task}_model")

    def labels(self, task: str) -> tuple[str, ...] | None:
        """The label names given for ``task`` (None: the model's or the card's)."""
        return getattr(self, f"{task}_labels")

    def items(self) -> list[tuple[str, Any]]:
        """(name, value) of every field, in declaration order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    def with_absolute_paths(self) -> AppSettings:
        """The same settings with every file named by its absolute path (for processes that run
        in other working directories); zoo names, "zoo", "haar", "ssd" and callables stay."""
        from ..zoo import list_models

        zoo = set(list_models())

        def absolute(spec: Any, keep: tuple[str, ...] = ()) -> Any:
            if spec is None or callable(spec) or (isinstance(spec, str) and spec in keep):
                return spec
            if isinstance(spec, (str, os.PathLike)):
                return os.path.abspath(spec)
            if isinstance(spec, tuple) and all(isinstance(p, (str, os.PathLike)) for p in spec):
                return tuple(os.path.abspath(p) for p in spec)
            return spec  # values (a mean given as numbers)

        return dataclasses.replace(
            self,
            age_model=absolute(self.age_model, tuple(zoo)),
            gender_model=absolute(self.gender_model, tuple(zoo)),
            mean=absolute(self.mean, ("zoo",)),
            detector=absolute(self.detector, ("haar", "ssd")),
            cache_dir=absolute(self.cache_dir),
        )

    def build_detector(self, device: str = "cpu") -> FaceDetector:
        """The face detector these settings name, its nets on ``device`` (zoo weights fetched
        as the settings say)."""
        return make_detector(
            self.detector,
            confidence=self.confidence,
            backend=self.backend or "onnx",
            device=device,
            cache_dir=self.cache_dir,
            download=self.download,
            progress=self.progress,
        )

    def photo_limits(self) -> dict[str, int]:
        """Keyword arguments of ``images.read_image`` / ``read_photo_bytes`` limits."""
        return {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels}


__all__ = ["DEFAULT_BATCH", "TASKS", "AppSettings", "ModelSpec", "parse_models"]
