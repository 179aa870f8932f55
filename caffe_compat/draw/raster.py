"""PNG without Graphviz: the built-in layout painted with OpenCV's drawing calls (OpenCV is a
dependency already), so a plain install writes every format ``draw`` offers."""

from __future__ import annotations

import itertools

import numpy as np

from ..errors import CaffeCompatError
from ..printable import printable
from .layout import Layout
from .model import Drawing
from .svg import place

MAX_PIXELS = 60_000_000  # a larger picture is painted at a smaller scale
FONT_SCALE = 0.42  # Hershey simplex at about the SVG's 12 px


def _rgb(colour: str) -> tuple[int, int, int]:
    """``#RRGGBB`` -> OpenCV's BGR order."""
    value = colour.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def _curve(points: list[tuple[float, float]], vertical: bool, scale: float) -> np.ndarray:
    """The SVG renderer's cubic curves, sampled (16 points a segment, vectorised)."""
    t = np.linspace(0.0, 1.0, 16)[:, None]
    pieces = []
    for p, q in itertools.pairwise(points):
        p, q = np.asarray(p), np.asarray(q)
        if vertical:
            c1, c2 = np.array([p[0], (p[1] + q[1]) / 2]), np.array([q[0], (p[1] + q[1]) / 2])
        else:
            c1, c2 = np.array([(p[0] + q[0]) / 2, p[1]]), np.array([(p[0] + q[0]) / 2, q[1]])
        pieces.append(
            (1 - t) ** 3 * p + 3 * (1 - t) ** 2 * t * c1 + 3 * (1 - t) * t**2 * c2 + t**3 * q
        )
    return np.round(np.concatenate(pieces) * scale).astype(np.int32)


def _arrow(image: np.ndarray, line: np.ndarray) -> None:
    import cv2

    tip, before = line[-1].astype(np.float64), line[-3].astype(np.float64)
    direction = tip - before
    norm = float(np.hypot(*direction)) or 1.0
    direction /= norm
    side = np.array([-direction[1], direction[0]])
    head = np.array([tip, tip - 8 * direction + 4 * side, tip - 8 * direction - 4 * side])
    cv2.fillPoly(image, [np.round(head).astype(np.int32)], (68, 68, 68), cv2.LINE_AA)


def to_png(drawing: Drawing, placed: Layout | None = None) -> bytes:
    """PNG bytes of the drawing (white background; labels in OpenCV's Hershey font)."""
    import cv2

    placed = placed or place(drawing)
    scale = min(1.0, (MAX_PIXELS / max(placed.width * placed.height, 1.0)) ** 0.5)
    width, height = int(placed.width * scale) + 1, int(placed.height * scale) + 1
    image = np.full((height, width, 3), 255, np.uint8)
    vertical = placed.rankdir in ("TB", "BT")
    for route in placed.routes:
        line = _curve(route.points, vertical, scale)
        cv2.polylines(image, [line], False, (68, 68, 68), 1, cv2.LINE_AA)
        _arrow(image, line)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for shape, node in zip(drawing.shapes, placed.nodes):
        cx, cy = node.x * scale, node.y * scale
        half_w, half_h = node.width * scale / 2, node.height * scale / 2
        outline = (32, 0, 176) if shape.marked else (51, 51, 51)
        thick = 3 if shape.marked else 1
        if shape.kind == "blob":
            centre, axes = (round(cx), round(cy)), (round(half_w), round(half_h))
            cv2.ellipse(image, centre, axes, 0, 0, 360, _rgb(shape.fill), -1, cv2.LINE_AA)
            cv2.ellipse(image, centre, axes, 0, 0, 360, outline, thick, cv2.LINE_AA)
        else:
            p1 = (round(cx - half_w), round(cy - half_h))
            p2 = (round(cx + half_w), round(cy + half_h))
            cv2.rectangle(image, p1, p2, _rgb(shape.fill), -1)
            cv2.rectangle(image, p1, p2, outline, thick)
        step = 15.0 * scale
        first = cy - (len(shape.lines) - 1) * step / 2
        for i, line in enumerate(shape.lines):
            text = printable(line).encode("ascii", "replace").decode("ascii")
            size = FONT_SCALE * scale
            (tw, th), _ = cv2.getTextSize(text, font, size, 1)
            if tw > 2 * half_w - 4 and tw > 0:  # Hershey runs wider than the SVG's estimate
                size *= (2 * half_w - 4) / tw
                (tw, th), _ = cv2.getTextSize(text, font, size, 1)
            origin = (round(cx - tw / 2), round(first + i * step + th / 2))
            cv2.putText(image, text, origin, font, size, (0, 0, 0), 1, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise CaffeCompatError("OpenCV could not encode the drawing as PNG")
    return encoded.tobytes()
