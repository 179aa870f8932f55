"""The per-photo work of a large run, in the form Ray Data calls it (pyarrow Tables in and out).

``read_bytes`` and ``find_faces`` run in CPU tasks: read the file, decode it, find the faces and
cut each out with its margin, exactly as ``Predictor.predict_many`` does (``faces.locate``). What
travels on to the inference actors is each face after the first step of its preprocessing
(``preprocess.first_resize``, see ``Geometry``): a fixed 256 x 256 x 3 float32 per face whatever
the photo's size, which ``preprocess`` then takes as it would the full-resolution cut.
``AgeGenderWorker`` is the actor: it holds the nets (one Predictor per distinct preprocessing
geometry, usually one), runs them over all the faces of a call, and commits that call's rows as
one shard. Every per-photo failure becomes a row with an ``error``; nothing here raises for a bad
photo. Paths travel as bytes (a file name need not be UTF-8); a shard's ``path`` column shows
them as text (undecodable bytes as ``\\xNN``) and ``path_bytes`` keeps such names exactly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CaffeCompatError
from .faces import Detection, cut, locate
from .images import decode_photo, read_photo_bytes
from .preprocess import first_resize, first_resize_shape
from .scale_output import commit_shard, schema
from .settings import AppSettings


@dataclass(frozen=True)
class Geometry:
    """How a face is shipped to the actors: after ``preprocess.first_resize`` in its mode."""

    mode: str  # crop mode: oversample, center or opencv
    size: int  # resize size of the Caffe modes
    crop: int  # net input size

    @property
    def shape(self) -> tuple[int, int, int]:
        return first_resize_shape(self.mode, size=self.size, crop=self.crop)

    @property
    def dtype(self) -> Any:
        # blobFromImage resizes in the image's own type (uint8 photos); the Caffe modes in float32
        return np.uint8 if self.mode == "opencv" else np.float32

    def shrink(self, face: np.ndarray) -> np.ndarray:
        return first_resize(face, self.mode, size=self.size, crop=self.crop)


def geometry_of(predictor: Any, task: str) -> Geometry:
    net = predictor.classifiers[task]
    return Geometry(predictor.crop, net.size, net.crop_size)


def path_text(raw: bytes) -> str:
    """A path's bytes as the text of the ``path`` column (undecodable bytes as ``\\xNN``)."""
    return raw.decode("utf-8", "backslashreplace")


def path_bytes(raw: bytes) -> bytes | None:
    """The ``path_bytes`` column: the exact bytes where the name is not UTF-8, else None."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    return None


def batch_paths(batch: Any) -> list[bytes]:
    """The ``path`` column as bytes, whether it holds bytes or (UTF-8) text."""
    return [v if isinstance(v, bytes) else os.fsencode(v) for v in batch.column("path").to_pylist()]


# --------------------------------------------------------------------------------------------
# CPU tasks


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, CaffeCompatError):
        return exc.reason
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"


def read_bytes(batch: Any, max_bytes: int) -> Any:
    """``path`` -> ``path`` (bytes), ``data`` (the file's bytes), ``error``."""
    import pyarrow as pa

    paths = batch_paths(batch)
    data: list[bytes | None] = []
    errors: list[str | None] = []
    for path in paths:
        try:
            data.append(read_photo_bytes(os.fsdecode(path), max_bytes))
            errors.append(None)
        except Exception as exc:  # any failure is this photo's row, never the job's
            data.append(None)
            errors.append(_one_line(exc))
    return pa.table(
        {
            "path": pa.array(paths, pa.binary()),
            "data": pa.array(data, pa.large_binary()),
            "error": pa.array(errors, pa.string()),
        }
    )


_DETECTORS: dict[Any, Any] = {}


def _detector(settings: AppSettings) -> Any:
    """One detector per worker process and setting (an SSD net loads once, not per block)."""
    spec = settings.detector
    if callable(spec):
        return spec
    key = (spec, settings.confidence, settings.backend, settings.cache_dir)
    if key not in _DETECTORS:
        _DETECTORS[key] = settings.build_detector("cpu")
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


def _ship(
    image: np.ndarray, settings: AppSettings, geometries: Sequence[Geometry]
) -> tuple[list[tuple[Detection, tuple]], list[bytes]]:
    """One photo's faces and, per geometry, their pixels after the first resize (raw bytes)."""
    detector = None if settings.no_detect else _detector(settings)
    found = locate(image, detector, settings.margin)
    faces = [cut(image, crop_box) for _, crop_box in found]
    shipped = []
    for geometry in geometries:
        stack = np.empty((len(faces), *geometry.shape), geometry.dtype)
        for j, face in enumerate(faces):
            stack[j] = geometry.shrink(face)
        shipped.append(stack.tobytes())
    return found, shipped


def find_faces(batch: Any, settings: AppSettings, geometries: Sequence[Geometry]) -> Any:
    """``path``, ``data``, ``error`` -> per photo: the boxes, crop boxes, detector scores and
    the faces shrunk for each geometry (``pixels_<i>``, faces x H x W x 3, raw bytes)."""
    import pyarrow as pa

    paths = batch_paths(batch)
    errors = batch.column("error").to_pylist()
    blobs = batch.column("data")
    boxes: list[list[int] | None] = []
    crop_boxes: list[list[int] | None] = []
    scores: list[list[float | None] | None] = []
    pixels: list[list[bytes | None]] = [[] for _ in geometries]
    with _opencv_threads(1):
        for index, path in enumerate(paths):
            found: list[tuple[Detection, tuple]] | None = None
            shipped: list[bytes] = []
            if errors[index] is None:
                try:
                    data = blobs[index].as_py()
                    image = decode_photo(data, os.fsdecode(path), max_pixels=settings.max_pixels)
                    found, shipped = _ship(image, settings, geometries)
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
        "path": pa.array(paths, pa.binary()),
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
    """Tasks sharing one geometry (an index into the run's geometries)."""

    tasks: tuple[str, ...]
    geometry: int


class AgeGenderWorker:
    """A Ray Data actor: the nets loaded once, each call's photos classified and committed as one
    shard; returns one summary row (counts), so no per-photo data goes back to the driver."""

    def __init__(
        self,
        out_dir: str,
        settings: AppSettings,
        groups: Sequence[NetGroup],
        geometries: Sequence[Geometry],
        identities: dict[str, str],
        use_gpu: bool,
    ) -> None:
        from .predictor import Predictor

        self.out_dir = out_dir
        self.geometries = tuple(geometries)
        self.identities = identities
        threads = None if use_gpu else settings.threads
        device = "cuda" if use_gpu else "cpu"
        self.groups = [
            (
                group,
                Predictor(
                    settings, models=group.tasks, device=device, threads=threads, progress=False
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

        paths = batch_paths(batch)
        crop_boxes = batch.column("crop_boxes").to_pylist()
        scores = batch.column("scores").to_pylist()
        labels = {t: p.labels[t] for _, p in self.groups for t in p.tasks}
        columns: dict[str, list[Any]] = {name: [] for name in schema().names}
        for i, raw in enumerate(paths):
            named = {"path": path_text(raw), "path_bytes": path_bytes(raw)}
            count = 0 if errors[i] is not None or boxes[i] is None else len(boxes[i]) // 4
            if count == 0:
                row = dict.fromkeys(columns)
                row.update(named, face=0, error=errors[i])
                row["faces"] = None if errors[i] is not None else 0
                for name, value in row.items():
                    columns[name].append(value)
                continue
            for j in range(count):
                row = dict.fromkeys(columns)
                row.update(
                    named,
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
