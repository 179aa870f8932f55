"""Score an age or gender net on Adience's aligned faces, the way Levi & Hassner report it.

Per fold: exact accuracy and, for age, 1-off accuracy (a prediction in an adjacent age group
counts as right); then the mean and standard deviation over the folds, in each crop mode asked
for, and a confusion matrix (rows: true class, columns: predicted) summed over the folds. No face
detection: Adience's aligned faces are already face crops.

The paper trained one net per fold split (four folds) and tested it on the held-out fifth. A user
has one model per task; scoring it on all five folds is what can be done, and faces it was
trained on are then among the scored ones. ``PROTOCOL_NOTE`` says so in every report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CaffeCompatError
from ..io.atomic import atomic_output
from .adience import TASK_CLASSES, Fold, read_folds
from .images import read_image
from .settings import DEFAULT_BATCH, AppSettings

PROTOCOL_NOTE = (
    "The paper trained a separate net for each of the five folds and scored it on that held-out "
    "fold only. This run scores ONE model on every fold; a released model was trained on some of "
    "these faces (which folds is not documented), so these are not held-out numbers and need not "
    "match the paper's."
)
STD_NOTE = "std is the population standard deviation over folds (numpy ddof=0)"
# Levi & Hassner 2015, Table 2/3: (exact mean, exact std, 1-off mean, 1-off std), percent.
PAPER = {
    ("age", "oversample"): (50.7, 5.1, 84.7, 2.2),
    ("age", "center"): (49.5, 4.4, 84.6, 1.7),
    ("gender", "oversample"): (86.8, 1.4, None, None),
    ("gender", "center"): (85.9, 1.4, None, None),
}


@dataclass
class FoldScore:
    """One fold in one crop mode. Accuracies are fractions (0..1); None when no face was scored."""

    fold: int
    faces: int
    correct: int
    one_off_correct: int | None
    missing: int
    unreadable: int

    @property
    def exact(self) -> float | None:
        return self.correct / self.faces if self.faces else None

    @property
    def one_off(self) -> float | None:
        if self.one_off_correct is None or not self.faces:
            return None
        return self.one_off_correct / self.faces


@dataclass
class ModeScore:
    """All folds in one crop mode, their mean and std, and the summed confusion matrix."""

    crop: str
    folds: list[FoldScore]
    confusion: np.ndarray  # classes x classes, [true, predicted]

    def _stats(self, values: list[float | None]) -> tuple[float | None, float | None]:
        kept = [v for v in values if v is not None]
        if not kept:
            return None, None
        return float(np.mean(kept)), float(np.std(kept))

    @property
    def exact(self) -> tuple[float | None, float | None]:
        return self._stats([f.exact for f in self.folds])

    @property
    def one_off(self) -> tuple[float | None, float | None]:
        return self._stats([f.one_off for f in self.folds])


@dataclass
class Evaluation:
    task: str
    labels: tuple[str, ...]
    source: str
    folds: list[Fold]
    modes: dict[str, ModeScore]
    missing_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=lambda: [PROTOCOL_NOTE, STD_NOTE])

    @property
    def missing(self) -> int:
        first = next(iter(self.modes.values()))
        return sum(f.missing for f in first.folds)

    @property
    def unreadable(self) -> int:
        first = next(iter(self.modes.values()))
        return sum(f.unreadable for f in first.folds)

    def to_dict(self) -> dict[str, Any]:
        def pct(value: float | None) -> float | None:
            return None if value is None else 100.0 * value

        return {
            "task": self.task,
            "labels": list(self.labels),
            "model": self.source,
            "folds": [
                {
                    "fold": f.index,
                    "file": str(f.path),
                    "rows": f.rows,
                    "kept": f.kept,
                    "dropped": f.dropped_total,
                    "dropped_by_value": dict(f.dropped),
                    "typo_fixed": f.fixed,
                }
                for f in self.folds
            ],
            "missing_images": self.missing,
            "unreadable_images": self.unreadable,
            "modes": {
                crop: {
                    "folds": [
                        {
                            "fold": s.fold,
                            "faces": s.faces,
                            "exact_percent": pct(s.exact),
                            "one_off_percent": pct(s.one_off),
                            "missing": s.missing,
                            "unreadable": s.unreadable,
                        }
                        for s in mode.folds
                    ],
                    "exact_mean_percent": pct(mode.exact[0]),
                    "exact_std_percent": pct(mode.exact[1]),
                    "one_off_mean_percent": pct(mode.one_off[0]),
                    "one_off_std_percent": pct(mode.one_off[1]),
                    "confusion": mode.confusion.tolist(),
                    "paper": _paper_dict(self.task, crop),
                }
                for crop, mode in self.modes.items()
            },
            "notes": list(self.notes),
        }


def _paper_dict(task: str, crop: str) -> dict[str, float | None] | None:
    values = PAPER.get((task, crop))
    if values is None:
        return None
    keys = (
        "exact_mean_percent",
        "exact_std_percent",
        "one_off_mean_percent",
        "one_off_std_percent",
    )
    return dict(zip(keys, values))


def one_off_hits(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """True where the predicted age group is the true one or a neighbour of it."""
    return np.abs(np.asarray(predicted, np.int64) - np.asarray(true, np.int64)) <= 1


def _read(path: Path, settings: AppSettings) -> np.ndarray | None:
    """The face image, read under the settings' limits; None when it cannot be used."""
    try:
        return read_image(path, **settings.photo_limits())
    except CaffeCompatError:
        return None


class _Scorer:
    """Scores fold after fold in every crop mode, summing the confusion matrices; counts the
    missing and unreadable images and reports progress."""

    def __init__(self, predictor: Any, task: str, crops: list[str], faces_root: Path) -> None:
        self.predictor, self.task, self.crops, self.faces_root = predictor, task, crops, faces_root
        classes = len(TASK_CLASSES[task])
        self.confusion = {c: np.zeros((classes, classes), np.int64) for c in crops}
        self.scores: dict[str, list[FoldScore]] = {c: [] for c in crops}
        self.examples: list[str] = []  # the first missing images
        self.done = 0

    def _images(self, faces: Sequence[Any], limits: AppSettings) -> tuple[list, list, int, int]:
        """The readable images of ``faces``, their labels, and how many were missing and
        unreadable."""
        images, truth, missing, unreadable = [], [], 0, 0
        for face in faces:
            path = face.image_path(self.faces_root)
            if not path.is_file():
                missing += 1
                if len(self.examples) < 3:
                    self.examples.append(str(path))
                continue
            image = _read(path, limits)
            if image is None:
                unreadable += 1
                continue
            images.append(image)
            truth.append(face.label)
        return images, truth, missing, unreadable

    def fold(self, fold: Fold, limits: AppSettings, progress: Callable[[int], None]) -> None:
        """Score one fold, ``batch`` faces per call, in every crop mode."""
        tallies = {c: [0, 0, 0] for c in self.crops}  # faces, correct, one-off correct
        missing = unreadable = 0
        chunk = max(1, int(getattr(self.predictor, "batch", DEFAULT_BATCH)))
        for start in range(0, fold.kept, chunk):
            faces = fold.faces[start : start + chunk]
            images, truth, lost, bad = self._images(faces, limits)
            missing, unreadable = missing + lost, unreadable + bad
            self.done += len(faces)
            if images:
                true = np.asarray(truth)
                for crop in self.crops:
                    probs = np.asarray(self.predictor.classify(images, crop=crop)[self.task])
                    predicted = probs.argmax(axis=1)
                    np.add.at(self.confusion[crop], (true, predicted), 1)
                    tally = tallies[crop]
                    tally[0] += len(true)
                    tally[1] += int((predicted == true).sum())
                    tally[2] += int(one_off_hits(predicted, true).sum())
            progress(self.done)
        for crop in self.crops:
            faces, correct, near = tallies[crop]
            near_or_none = near if self.task == "age" else None
            score = FoldScore(fold.index, faces, correct, near_or_none, missing, unreadable)
            self.scores[crop].append(score)


def evaluate_adience(
    folds_dir: str | os.PathLike[str],
    faces_dir: str | os.PathLike[str],
    *,
    task: str = "age",
    crops: Sequence[str] = ("oversample",),
    predictor: Any = None,
    settings: AppSettings | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    **predictor_options: Any,
) -> Evaluation:
    """Score ``task``'s net on every fold in ``folds_dir`` with images under ``faces_dir``.

    ``on_progress(done, total)`` is called after each chunk of faces. ``predictor``: anything
    with ``classify(faces, crop) -> {task: faces x classes}``, ``batch``
    and ``describe()`` (default: a ``caffe_compat.app.predictor.Predictor`` for this task built
    from ``settings`` and ``predictor_options``, which are ``AppSettings`` fields). Images are
    read under the settings' photo limits. Missing and undecodable images are counted per fold
    and skipped; an error only when no image at all could be read.
    """
    if task not in TASK_CLASSES:
        raise CaffeCompatError(f"task must be age or gender, not {task!r}")
    crops = list(dict.fromkeys(crops))
    if not crops:
        raise CaffeCompatError("no crop mode given")
    faces_root = Path(faces_dir)
    if not faces_root.is_dir():
        raise CaffeCompatError("no such folder (the Adience aligned faces)", path=str(faces_root))
    folds = read_folds(folds_dir, task)
    limits = AppSettings.build(settings, **predictor_options)
    if predictor is None:
        from .predictor import Predictor

        predictor = Predictor(settings=settings, models=(task,), **predictor_options)
    classes = len(TASK_CLASSES[task])
    labels = tuple(getattr(predictor, "labels", {}).get(task, TASK_CLASSES[task]))
    if len(labels) != classes:
        raise CaffeCompatError(
            f"the {task} net has {len(labels)} classes; Adience {task} has {classes}"
        )
    total = sum(f.kept for f in folds)

    def progress(done: int) -> None:
        if on_progress is not None:
            on_progress(done, total)

    scorer = _Scorer(predictor, task, crops, faces_root)
    for fold in folds:
        scorer.fold(fold, limits, progress)
    if sum(s.faces for s in scorer.scores[crops[0]]) == 0:
        hint = f" (e.g. {scorer.examples[0]})" if scorer.examples else ""
        raise CaffeCompatError(
            f"none of the {total} face images of the fold files could be read under "
            f"{faces_root}{hint}; expected <faces>/<user_id>/landmark_aligned_face.<face_id>."
            "<original_image> from Adience's aligned faces",
        )
    describe = getattr(predictor, "describe", None)
    source = "; ".join(describe(crops[0]).values()) if callable(describe) else repr(predictor)
    modes = {c: ModeScore(c, scorer.scores[c], scorer.confusion[c]) for c in crops}
    return Evaluation(task, labels, source, folds, modes, scorer.examples)


# --------------------------------------------------------------------------------------------
# Report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.1f} %"


def render(evaluation: Evaluation) -> str:
    """The human-readable report."""
    e = evaluation
    rows = sum(f.rows for f in e.folds)
    kept = sum(f.kept for f in e.folds)
    fixed = sum(f.fixed for f in e.folds)
    lines = [
        f"Adience {e.task} evaluation: {len(e.folds)} fold file(s), {rows} rows, {kept} kept, "
        f"{rows - kept} dropped (label not usable for {e.task})"
        + (f", {fixed} '(25, 23)' read as '(25, 32)'" if fixed else ""),
        f"model: {e.source}",
    ]
    if e.missing or e.unreadable:
        lines.append(
            f"skipped images: {e.missing} missing, {e.unreadable} unreadable"
            + (f" (first missing: {e.missing_examples[0]})" if e.missing_examples else "")
        )
    for crop, mode in e.modes.items():
        lines.append(f"crop {crop}:")
        for s in mode.folds:
            text = f"  fold {s.fold}: {s.faces:>6} faces  exact {_pct(s.exact):>8}"
            if e.task == "age":
                text += f"  1-off {_pct(s.one_off):>8}"
            if s.missing or s.unreadable:
                text += f"  ({s.missing} missing, {s.unreadable} unreadable)"
            lines.append(text)
        mean, std = mode.exact
        text = f"  mean ± std over folds: exact {_pct(mean)} ± {_pct(std)}"
        if e.task == "age":
            mean1, std1 = mode.one_off
            text += f", 1-off {_pct(mean1)} ± {_pct(std1)}"
        lines.append(text)
        paper = PAPER.get((e.task, crop))
        if paper:
            text = f"  paper (held-out folds): exact {paper[0]} ± {paper[1]} %"
            if paper[2] is not None:
                text += f", 1-off {paper[2]} ± {paper[3]} %"
            lines.append(text)
    lines += [f"note: {note}" for note in e.notes]
    return "\n".join(lines)


def _panel(matrix: np.ndarray, labels: Sequence[str], title: str) -> np.ndarray:
    """One confusion matrix drawn with OpenCV: cells shaded by the row's fraction, with counts."""
    import cv2

    n = len(labels)
    cell, left, top, bottom = 64, 96, 84, 40
    width, height = left + n * cell + 16, top + n * cell + bottom
    canvas = np.full((height, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    black = (0, 0, 0)
    cv2.putText(canvas, title, (8, 22), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(canvas, "predicted", (left, 46), font, 0.45, black, 1, cv2.LINE_AA)
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    fractions = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    dark = np.array([140.0, 60.0, 10.0])  # BGR: a dark blue for a full row
    for i in range(n):
        y = top + i * cell
        cv2.putText(canvas, labels[i], (6, y + cell // 2 + 5), font, 0.4, black, 1, cv2.LINE_AA)
        for j in range(n):
            x = left + j * cell
            if i == 0:
                cv2.putText(canvas, labels[j], (x + 2, top - 8), font, 0.35, black, 1, cv2.LINE_AA)
            f = float(fractions[i, j])
            colour = tuple(round(255 - f * (255 - d)) for d in dark)
            cv2.rectangle(canvas, (x, y), (x + cell - 1, y + cell - 1), colour, -1)
            cv2.rectangle(canvas, (x, y), (x + cell - 1, y + cell - 1), (200, 200, 200), 1)
            ink = (255, 255, 255) if f > 0.5 else black
            count = str(int(matrix[i, j]))
            cv2.putText(canvas, count, (x + 6, y + 26), font, 0.45, ink, 1, cv2.LINE_AA)
            cv2.putText(canvas, f"{100 * f:.0f}%", (x + 6, y + 48), font, 0.4, ink, 1, cv2.LINE_AA)
    cv2.putText(canvas, "rows: true class", (8, height - 14), font, 0.45, black, 1, cv2.LINE_AA)
    return canvas


def confusion_image(evaluation: Evaluation) -> np.ndarray:
    """Every crop mode's confusion matrix, side by side, as a BGR image."""
    panels = [
        _panel(
            mode.confusion,
            evaluation.labels,
            f"{evaluation.task}, crop {crop}: {int(mode.confusion.sum())} faces",
        )
        for crop, mode in evaluation.modes.items()
    ]
    return np.concatenate(panels, axis=1)


def write_confusion(evaluation: Evaluation, path: str | os.PathLike[str]) -> Path:
    """Write the confusion matrices as a PNG, atomically."""
    import cv2

    ok, encoded = cv2.imencode(".png", confusion_image(evaluation))
    if not ok:
        raise CaffeCompatError("OpenCV could not encode the confusion matrix", path=str(path))
    with atomic_output(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return Path(path)
