"""The per-photo work of a large run, in the form Ray Data calls it (pyarrow Tables in and out).

``read_bytes`` and ``find_faces`` run in CPU tasks: read the file, decode it, find the faces and
cut each out with its margin, exactly as ``Predictor.predict_many`` does. What travels on to the
inference actors is each face already resized to the size the nets' preprocessing resizes it to
(``Geometry.shrink``): a fixed 256 x 256 x 3 float32 per face whatever the photo's size, and
``preprocess`` applied to it gives bit for bit what it gives on the full-resolution cut (its
resize of an image already at the target size is the identity). ``AgeGenderWorker`` is the
actor: it holds the nets (one Predictor per distinct preprocessing geometry, usually one), runs
them over all the faces of a call, and commits that call's rows as one shard. Every per-photo
failure becomes a row with an ``error``; nothing here raises for a bad photo.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CaffeCompatError
from .faces import Detection, cut, expand_box, make_detector
from .images import decode_photo, read_photo_bytes
from .scale_output import commit_shard, schema


@dataclass(frozen=True)
class Geometry:
    """How a face is shipped to the actors: the resize ``preprocess`` would do first."""

    mode: str  # crop mode: oversample, center or opencv
    size: int  # resize size of the Caffe modes
    crop: int  # net input size

    @property
    def shape(self) -> tuple[int, int, int]:
        side = self.crop if self.mode == "opencv" else self.size
        return (side, side, 3)

    @property
    def dtype(self) -> Any:
        # blobFromImage resizes in the image's own type; the Caffe modes resize float32
        return np.uint8 if self.mode == "opencv" else np.float32

    def shrink(self, face: np.ndarray) -> np.ndarray:
        import cv2

        image = face if self.mode == "opencv" else face.astype(np.float32)
        height, width = self.shape[:2]
        if image.shape[:2] == (height, width):
            return np.ascontiguousarray(image)
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def geometry_of(predictor: Any, task: str) -> Geometry:
    classifier = predictor.classifiers[task]
    return Geometry(predictor.crop, classifier.size, classifier.crop_size)


@dataclass(frozen=True)
class FaceSettings:
    """What the CPU tasks need (picklable): detection, margin, limits, shipping geometries."""

    detector: Any
    confidence: float
    backend: str
    margin: float
    no_detect: bool
    max_pixels: int
    max_bytes: int
    geometries: tuple[Geometry, ...]


# --------------------------------------------------------------------------------------------
# CPU tasks


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, CaffeCompatError):
        return exc.reason
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"


def read_bytes(batch: Any, max_bytes: int) -> Any:
    """``path`` -> ``path``, ``data`` (the file's bytes), ``error``."""
    import pyarrow as pa

    paths = batch.column("path").to_pylist()
    data: list[bytes | None] = []
    errors: list[str | None] = []
    for path in paths:
        try:
            data.append(read_photo_bytes(path, max_bytes))
            errors.append(None)
        except Exception as exc:  # any failure is this photo's row, never the job's
            data.append(None)
            errors.append(_one_line(exc))
    return pa.table(
        {
            "path": pa.array(paths, pa.string()),
            "data": pa.array(data, pa.large_binary()),
            "error": pa.array(errors, pa.string()),
        }
    )


_DETECTORS: dict[Any, Any] = {}


def _detector(settings: FaceSettings) -> Any:
    """One detector per worker process and setting (an SSD net loads once, not per block)."""
    spec = settings.detector
    if callable(spec):
        return spec
    key = (
        tuple(os.fspath(p) for p in spec) if isinstance(spec, (list, tuple)) else spec,
        settings.confidence,
        settings.backend,
    )
    if key not in _DETECTORS:
        _DETECTORS[key] = make_detector(
            spec, confidence=settings.confidence, backend=settings.backend, device="cpu"
        )
    return _DETECTORS[key]


@contextlib.contextmanager
def _opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's thread pool size for the block, restored after: a task owns one CPU."""
    import cv2

    saved = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(saved)


def _locate(image: np.ndarray, settings: FaceSettings) -> list[tuple[Detection, tuple]]:
    """``Predictor._locate``: the detector's boxes, each grown by the margin."""
    height, width = image.shape[:2]
    if settings.no_detect:
        whole = (0, 0, width, height)
        return [(Detection(whole), whole)]
    found = list(_detector(settings)(image))
    return [(d, expand_box(d.box, settings.margin, width, height)) for d in found]


def find_faces(batch: Any, settings: FaceSettings) -> Any:
    """``path``, ``data``, ``error`` -> per photo: the boxes, crop boxes, detector scores and
    the faces shrunk for each geometry (``pixels_<i>``, faces x H x W x 3, raw bytes)."""
    import pyarrow as pa

    paths = batch.column("path").to_pylist()
    errors = batch.column("error").to_pylist()
    blobs = batch.column("data")
    boxes: list[list[int] | None] = []
    crop_boxes: list[list[int] | None] = []
    scores: list[list[float | None] | None] = []
    pixels: list[list[bytes | None]] = [[] for _ in settings.geometries]
    with _opencv_threads(1):
        for index, path in enumerate(paths):
            found: list[tuple[Detection, tuple]] | None = None
            shipped: list[bytes] = []
            if errors[index] is None:
                try:
                    image = decode_photo(blobs[index].as_py(), path, max_pixels=settings.max_pixels)
                    found = _locate(image, settings)
                    faces = [cut(image, crop_box) for _, crop_box in found]
                    for geometry in settings.geometries:
                        stack = np.empty((len(faces), *geometry.shape), geometry.dtype)
                        for j, face in enumerate(faces):
                            stack[j] = geometry.shrink(face)
                        shipped.append(stack.tobytes())
                except Exception as exc:  # this photo's row, never the job's
                    errors[index], found = _one_line(exc), None
            if found is None:
                boxes.append(None)
                crop_boxes.append(None)
                scores.append(None)
                for column in pixels:
                    column.append(None)
                continue
            boxes.append([int(v) for d, _ in found for v in d.box])
            crop_boxes.append([int(v) for _, c in found for v in c])
            scores.append([d.score for d, _ in found])
            for column, data in zip(pixels, shipped):
                column.append(data)
    columns = {
        "path": pa.array(paths, pa.string()),
        "error": pa.array(errors, pa.string()),
        "boxes": pa.array(boxes, pa.list_(pa.int32())),
        "crop_boxes": pa.array(crop_boxes, pa.list_(pa.int32())),
        "scores": pa.array(scores, pa.list_(pa.float64())),
    }
    for i, column in enumerate(pixels):
        columns[f"pixels_{i}"] = pa.array(column, pa.large_binary())
    return pa.table(columns)


# --------------------------------------------------------------------------------------------
# Inference actor


@dataclass(frozen=True)
class NetGroup:
    """Tasks sharing one geometry, and the Predictor options that build their nets."""

    tasks: tuple[str, ...]
    geometry: int  # index into FaceSettings.geometries
    options: dict[str, Any]


class AgeGenderWorker:
    """A Ray Data actor: the nets loaded once, each call's photos classified and committed as one
    shard; returns one summary row (counts), so no per-photo data goes back to the driver."""

    def __init__(
        self,
        out_dir: str,
        groups: Sequence[NetGroup],
        geometries: Sequence[Geometry],
        identities: dict[str, str],
        threads: int | None,
        use_gpu: bool,
    ) -> None:
        from .predictor import Predictor

        self.out_dir = out_dir
        self.geometries = tuple(geometries)
        self.identities = identities
        device = "cuda" if use_gpu else "cpu"
        self.groups = [
            (
                group,
                Predictor(
                    **group.options,
                    models=group.tasks,
                    device=device,
                    threads=None if use_gpu else threads,
                    progress=False,
                ),
            )
            for group in groups
        ]
        first = self.groups[0][1]
        self.crop, self.backend = first.crop, first.backend

    def _faces(self, batch: Any, geometry: int, counts: list[int]) -> list[np.ndarray]:
        shape, dtype = self.geometries[geometry].shape, self.geometries[geometry].dtype
        column = batch.column(f"pixels_{geometry}")
        faces: list[np.ndarray] = []
        for index, count in enumerate(counts):
            if count:
                stack = np.frombuffer(column[index].as_py(), dtype).reshape(count, *shape)
                faces.extend(stack)
        return faces

    def _classify(self, batch: Any, counts: list[int]) -> dict[str, np.ndarray]:
        probs: dict[str, np.ndarray] = {}
        for group, predictor in self.groups:
            faces = self._faces(batch, group.geometry, counts)
            for task, values in predictor.classify(faces).items():
                probs[task] = values
        return probs

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        errors = batch.column("error").to_pylist()
        boxes = batch.column("boxes").to_pylist()
        counts = [0 if b is None else len(b) // 4 for b in boxes]
        probs: dict[str, np.ndarray | None] = {}
        try:
            probs = dict(self._classify(batch, counts))
            offsets = np.cumsum([0, *counts])
            per_photo = [
                {t: p[offsets[i] : offsets[i + 1]] for t, p in probs.items()}
                for i in range(len(counts))
            ]
        except Exception:  # find the photo at fault; the others keep their results
            per_photo = []
            for i in range(len(counts)):
                try:
                    one = batch.slice(i, 1)
                    per_photo.append(dict(self._classify(one, counts[i : i + 1])))
                except Exception as exc:
                    errors[i] = f"classification failed: {_one_line(exc)}"
                    per_photo.append({})
        table = self._rows(batch, errors, boxes, per_photo)
        commit_shard(self.out_dir, table)
        failed = sum(1 for e in errors if e is not None)
        return pa.table(
            {
                "photos": [len(errors)],
                "faces": [sum(c for e, c in zip(errors, counts) if e is None)],
                "no_face": [sum(1 for e, c in zip(errors, counts) if e is None and c == 0)],
                "errors": [failed],
            }
        )

    def _rows(
        self,
        batch: Any,
        errors: list[str | None],
        boxes: list[list[int] | None],
        per_photo: list[dict[str, np.ndarray]],
    ) -> Any:
        import pyarrow as pa

        paths = batch.column("path").to_pylist()
        crop_boxes = batch.column("crop_boxes").to_pylist()
        scores = batch.column("scores").to_pylist()
        labels = {t: p.labels[t] for _, p in self.groups for t in p.tasks}
        columns: dict[str, list[Any]] = {name: [] for name in schema().names}
        for i, path in enumerate(paths):
            count = 0 if errors[i] is not None or boxes[i] is None else len(boxes[i]) // 4
            if count == 0:
                row = dict.fromkeys(columns)
                row.update(path=path, face=0, error=errors[i])
                row["faces"] = None if errors[i] is not None else 0
                for name, value in row.items():
                    columns[name].append(value)
                continue
            for j in range(count):
                row = dict.fromkeys(columns)
                row.update(
                    path=path,
                    face=j + 1,
                    faces=count,
                    box=boxes[i][4 * j : 4 * j + 4],
                    crop_box=crop_boxes[i][4 * j : 4 * j + 4],
                    detection_score=scores[i][j],
                    crop=self.crop,
                    backend=self.backend,
                )
                for task, values in per_photo[i].items():
                    p = values[j]
                    best = int(np.argsort(-p, kind="stable")[0])  # as FacePrediction picks
                    row[task] = labels[task][best]
                    row[f"{task}_prob"] = float(p[best])
                    row[f"{task}_probs"] = [float(v) for v in p]
                    row[f"{task}_model"] = self.identities[task]
                for name, value in row.items():
                    columns[name].append(value)
        return pa.Table.from_pydict(columns, schema=schema())
