"""Detections compare as sets: SSD rows in one canonical order, ours paired with the reference's.

Two correct implementations can disagree on WHICH boxes a DetectionOutput keeps where a decision
sits on a threshold within float32 rounding: a score at ``confidence_threshold``, two boxes
whose overlap is at ``nms_threshold``, scores tied at the ``keep_top_k`` / ``top_k`` cut. Such
borderline rows, present on one side only, are excused (and counted in the note); any other
unpaired row fails the comparison. Coordinates of degenerate boxes (decoded from huge
offsets, 1e18 or float32's inf where float64 stays finite) are clipped on both sides to
[-1, 2], an image size beyond the image: they compare equal without making every other
column's tolerance vacuous.
"""

from __future__ import annotations

import numpy as np

from ..shapes.detection import ROW, DetectionSettings

COORDINATE_RANGE = (-1.0, 2.0)  # normalized box coordinates kept exact; beyond: degenerate
BORDERLINE = 1e-3  # how close to a threshold a decision must be to go either way in float32


def canonical_detections(rows: np.ndarray) -> np.ndarray:
    """(R, 7) detections in one order, without placeholders, for comparing implementations.

    Drops Caffe's "no detection" rows (label -1) and OpenCV's zero padding (OpenCV 4 returns
    keep_top_k x batch rows, real ones first, and orders them by score); sorts by image, label,
    descending score, then the box. Coordinates are clipped to COORDINATE_RANGE (NaN to its
    low end)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, ROW)
    real = (rows[:, 1] != -1) & np.any(rows != 0, axis=1)
    rows = rows[real].copy()
    low, high = COORDINATE_RANGE
    rows[:, 3:] = np.clip(np.nan_to_num(rows[:, 3:], nan=low, posinf=high, neginf=low), low, high)
    order = np.lexsort(
        (rows[:, 6], rows[:, 5], rows[:, 4], rows[:, 3], -rows[:, 2], rows[:, 1], rows[:, 0])
    )
    return rows[order]


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Caffe's JaccardOverlap of one box with each of ``others`` (0 for disjoint or empty)."""
    if len(others) == 0:
        return np.zeros(0)
    xmin = np.maximum(box[0], others[:, 0])
    ymin = np.maximum(box[1], others[:, 1])
    xmax = np.minimum(box[2], others[:, 2])
    ymax = np.minimum(box[3], others[:, 3])
    inter = np.clip(xmax - xmin, 0, None) * np.clip(ymax - ymin, 0, None)
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    areas = np.clip(others[:, 2] - others[:, 0], 0, None) * np.clip(
        others[:, 3] - others[:, 1], 0, None
    )
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _borderline(row: np.ndarray, side: np.ndarray, other: np.ndarray, s: DetectionSettings) -> str:
    """Why ``row`` (on ``side``, missing from ``other``) may be kept by one correct
    implementation and dropped by another, or "" when it may not."""
    score = row[2]
    if s.confidence_threshold > -1e30 and abs(score - s.confidence_threshold) <= BORDERLINE:
        return "score at confidence_threshold"
    image = np.concatenate([side[side[:, 0] == row[0]], other[other[:, 0] == row[0]]])
    same = image[(image[:, 1] == row[1]) & np.any(image != row, axis=1)]
    if len(same) and np.any(np.abs(_iou(row[3:], same[:, 3:]) - s.nms_threshold) <= BORDERLINE):
        return "overlap at nms_threshold"
    mine = side[side[:, 0] == row[0]]
    if s.keep_top_k > 0 and len(mine) >= s.keep_top_k and score <= mine[:, 2].min() + BORDERLINE:
        return "score at the keep_top_k cut"
    if s.top_k > 0:
        label = mine[mine[:, 1] == row[1]]
        if len(label) >= s.top_k and score <= label[:, 2].min() + BORDERLINE:
            return "score at the top_k cut"
    return ""


def _distance(row: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.abs(rows[:, 2:] - row[2:]).max(axis=1)


def align_detections(
    ours: np.ndarray,
    reference: np.ndarray,
    settings: DetectionSettings | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Both outputs as canonical (R, 7) rows, ours reordered to pair with the reference's,
    and a note (what was excused, or the first row left unpaired).

    Detections are a set: within each (image, label) group every reference row takes the
    closest remaining row of ours. Rows left over on either side are dropped when each is
    borderline under ``settings`` (see the module docstring); otherwise both are returned as
    they are and the comparison fails on shape."""
    mine, theirs = canonical_detections(ours), canonical_detections(reference)
    paired_mine, paired_theirs, left_mine, left_theirs = [], [], [], []
    keys = {(row[0], row[1]) for row in np.concatenate([mine, theirs])}
    for key in sorted(keys):
        pool = mine[(mine[:, 0] == key[0]) & (mine[:, 1] == key[1])]
        slots = theirs[(theirs[:, 0] == key[0]) & (theirs[:, 1] == key[1])]
        free = list(range(len(pool)))
        # Closest pairs first, so an extra row on one side never takes another's partner.
        pairs = sorted(
            (float(d), i, j)
            for i, slot in enumerate(slots)
            for j, d in enumerate(_distance(slot, pool) if len(pool) else [])
        )
        taken_slots: set[int] = set()
        for _, i, j in pairs:
            if i in taken_slots or j not in free:
                continue
            taken_slots.add(i)
            free.remove(j)
            paired_theirs.append(slots[i])
            paired_mine.append(pool[j])
        left_theirs += [slots[i] for i in range(len(slots)) if i not in taken_slots]
        left_mine += [pool[j] for j in free]
    if not left_mine and not left_theirs:
        return _rows(paired_mine), _rows(paired_theirs), ""
    reasons: dict[str, int] = {}
    for side, other, left, name in (
        (mine, theirs, left_mine, "ours"),
        (theirs, mine, left_theirs, "the reference's"),
    ):
        for row in left:
            why = _borderline(row, side, other, settings) if settings is not None else ""
            if not why:
                box = ", ".join(f"{v:.4g}" for v in row)
                return mine, theirs, f"detection [{box}] of {name} has no partner"
            reasons[why] = reasons.get(why, 0) + 1
    excused = ", ".join(f"{n} x {why}" for why, n in reasons.items())
    return _rows(paired_mine), _rows(paired_theirs), f"borderline detections excused: {excused}"


def _rows(rows: list[np.ndarray]) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(-1, ROW)


ROW_SET_LIMIT = 3000  # rows paired by nearest distance (a rows x rows matrix) at most


def align_row_sets(ours: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """A data-dependent set of rows (Proposal's ROIs and scores) with ours reordered to pair
    with the reference's, and a note when the order differed.

    Such a layer sorts its boxes by score; where float32 rounds scores to a tie (a softmax
    saturated at 1) the float32 back ends and the float64 judge order tied boxes differently.
    Each reference row, nearest first, takes the nearest remaining row of ours (max absolute
    difference); the values are then compared as usual, so a row that is not there still fails.
    Unchanged when the shapes differ, when already in order, or above ROW_SET_LIMIT rows."""
    mine = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(reference, dtype=np.float64)
    if mine.shape != theirs.shape or mine.ndim == 0 or not 1 < len(mine) <= ROW_SET_LIMIT:
        return ours, reference, ""
    a, b = mine.reshape(len(mine), -1), theirs.reshape(len(theirs), -1)
    if np.array_equal(a, b):
        return ours, reference, ""
    distance = np.zeros((len(b), len(a)), dtype=np.float32)
    for column in range(a.shape[1]):
        np.maximum(
            distance,
            np.abs(b[:, column, None] - a[None, :, column]).astype(np.float32),
            out=distance,
        )
    order = np.empty(len(b), dtype=np.int64)
    free = np.ones(len(a), dtype=bool)
    for i in np.argsort(distance.min(axis=1), kind="stable"):
        j = int(np.argmin(np.where(free, distance[i], np.inf)))
        order[i] = j
        free[j] = False
    if np.array_equal(order, np.arange(len(order))):
        return ours, reference, ""
    moved = int((order != np.arange(len(order))).sum())
    note = f"rows compared as a set ({moved} of {len(order)} in another order: tied scores)"
    return mine[order].reshape(mine.shape), theirs, note
