"""Detections compare as sets: SSD rows in one canonical order, ours paired with the reference's."""

from __future__ import annotations

import numpy as np

from ..shapes.detection import ROW


def canonical_detections(rows: np.ndarray) -> np.ndarray:
    """(R, 7) detections in one order, without placeholders, for comparing implementations.

    Drops Caffe's "no detection" rows (label -1) and OpenCV's zero padding (OpenCV 4 returns
    keep_top_k x batch rows, real ones first, and orders them by score); sorts by image, label,
    descending score, then the box."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, ROW)
    real = (rows[:, 1] != -1) & np.any(rows != 0, axis=1)
    rows = rows[real]
    order = np.lexsort(
        (rows[:, 6], rows[:, 5], rows[:, 4], rows[:, 3], -rows[:, 2], rows[:, 1], rows[:, 0])
    )
    return rows[order]


def align_detections(ours: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both outputs as canonical (R, 7) rows, ours reordered to pair with the reference's.

    Detections are a set: two back ends may list tied or near-tied scores in either order, so
    within each (image, label) group every reference row takes the closest remaining row of
    ours. Different counts are left as they are (the comparison then fails on shape)."""
    mine, theirs = canonical_detections(ours), canonical_detections(reference)
    if mine.shape != theirs.shape:
        return mine, theirs
    paired = np.empty_like(mine)
    for key in {(row[0], row[1]) for row in theirs}:
        slots = np.flatnonzero((theirs[:, 0] == key[0]) & (theirs[:, 1] == key[1]))
        pool = list(np.flatnonzero((mine[:, 0] == key[0]) & (mine[:, 1] == key[1])))
        if len(pool) != len(slots):
            return mine, theirs
        for slot in slots:
            distance = [np.abs(mine[i, 2:] - theirs[slot, 2:]).max() for i in pool]
            paired[slot] = mine[pool.pop(int(np.argmin(distance)))]
    return paired, theirs
