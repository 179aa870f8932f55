"""The Adience benchmark's fold files, read with the label rules of Levi & Hassner's protocol.

``fold_{0..4}_data.txt`` are tab-separated with a header (``user_id original_image face_id age
gender x y dx dy tilt_ang fiducial_yaw_angle fiducial_score``). Age: a row counts only when its
age text is one of the eight class texts; ``(25, 23)``, a known typo in the files, is read as
``(25, 32)``; bare numbers, ``None`` and other ranges are dropped. Gender: ``m`` is class 0
(Male), ``f`` class 1 (Female); ``u`` and empty are dropped. Every drop is counted by its text so
a user can see what was left out and why.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CaffeCompatError

AGE_CLASSES = (
    "(0, 2)",
    "(4, 6)",
    "(8, 12)",
    "(15, 20)",
    "(25, 32)",
    "(38, 43)",
    "(48, 53)",
    "(60, 100)",
)
GENDER_CLASSES = ("Male", "Female")
AGE_FIXES = {"(25, 23)": "(25, 32)"}
GENDER_CODES = {"m": 0, "f": 1}
TASK_CLASSES = {"age": AGE_CLASSES, "gender": GENDER_CLASSES}
COLUMNS = ("user_id", "original_image", "face_id", "age", "gender")
FOLD_FILE = re.compile(r"fold_(\d+)_data\.txt")


@dataclass(frozen=True)
class Face:
    """One kept row: who, which aligned face image, and its class index."""

    fold: int
    line: int  # 1-based line in the fold file
    user_id: str
    original_image: str
    face_id: str
    label: int
    text: str  # the age or gender text as written in the file

    def image_path(self, faces_dir: str | os.PathLike[str]) -> Path:
        """``<faces>/<user_id>/landmark_aligned_face.<face_id>.<original_image>``."""
        name = f"landmark_aligned_face.{self.face_id}.{self.original_image}"
        return Path(faces_dir) / self.user_id / name


@dataclass
class Fold:
    """A fold file read for one task: kept faces and what was dropped (by its text)."""

    index: int
    path: Path
    task: str
    rows: int = 0
    faces: list[Face] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    fixed: int = 0  # rows whose age text was a known typo, read as the intended class

    @property
    def kept(self) -> int:
        return len(self.faces)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def label_of(task: str, text: str) -> tuple[int | None, bool]:
    """(class index or None when the row is dropped, whether a typo was fixed)."""
    text = text.strip()
    if task == "age":
        fixed = text in AGE_FIXES
        text = AGE_FIXES.get(text, text)
        return (AGE_CLASSES.index(text) if text in AGE_CLASSES else None), fixed
    if task == "gender":
        return GENDER_CODES.get(text), False
    raise CaffeCompatError(f"task must be age or gender, not {task!r}")


def read_fold(path: str | os.PathLike[str], task: str, index: int | None = None) -> Fold:
    """Read one fold file for ``task`` (``age`` or ``gender``)."""
    path = Path(path)
    if index is None:
        match = FOLD_FILE.fullmatch(path.name)
        index = int(match.group(1)) if match else 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CaffeCompatError(f"cannot read fold file: {exc.strerror}", path=str(path)) from None
    if not lines:
        raise CaffeCompatError("empty fold file (no header)", path=str(path))
    header = [h.strip() for h in lines[0].split("\t")]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise CaffeCompatError(
            f"not an Adience fold file: header lacks {', '.join(missing)} (tab-separated "
            f"columns {' '.join(COLUMNS)} ... expected)",
            path=str(path),
            line=1,
        )
    at = {c: header.index(c) for c in COLUMNS}
    fold = Fold(index, path, task)
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fold.rows += 1
        cells = line.split("\t")
        if len(cells) < len(header):
            fold.dropped["<short row>"] += 1
            continue
        text = cells[at[task]].strip()
        label, fixed = label_of(task, text)
        if label is None:
            fold.dropped[text or "<empty>"] += 1
            continue
        fold.fixed += fixed
        fold.faces.append(
            Face(
                fold=index,
                line=number,
                user_id=cells[at["user_id"]].strip(),
                original_image=cells[at["original_image"]].strip(),
                face_id=cells[at["face_id"]].strip(),
                label=label,
                text=text,
            )
        )
    return fold


def find_folds(folder: str | os.PathLike[str]) -> list[Path]:
    """``fold_<k>_data.txt`` files in ``folder``, by k."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaffeCompatError("no such folder", path=str(folder))
    found = []
    for entry in folder.iterdir():
        match = FOLD_FILE.fullmatch(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    if not found:
        raise CaffeCompatError(
            "no fold_<k>_data.txt files here (the Adience fold metadata)", path=str(folder)
        )
    return [entry for _, entry in sorted(found)]


def read_folds(folder: str | os.PathLike[str], task: str) -> list[Fold]:
    """Every fold file in ``folder`` read for ``task``."""
    return [read_fold(path, task) for path in find_folds(folder)]
