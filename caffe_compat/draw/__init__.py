"""Pictures of a net, as Caffe's ``draw_net.py`` drew them, with or without Graphviz.

- ``model.py``: what the picture shows (a ``Drawing``: layer boxes, blob ovals, edges) from a V0,
  V1 or V2 definition, for one phase or all;
- ``layout.py``: a small layered layout, so a plain install can draw;
- ``svg.py``, ``raster.py``: the built-in renderers (SVG; PNG through OpenCV);
- ``dot.py``: DOT text, and Graphviz's ``dot`` program where installed.

``render`` picks the engine: ``graphviz`` (the ``dot`` program), ``builtin``, or ``auto`` (Graphviz
when installed, else built-in). DOT text never needs Graphviz.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CaffeCompatError
from .dot import graphviz_program, run_graphviz, to_dot
from .model import Drawing, net_drawing, read_definition
from .raster import to_png
from .svg import to_svg

FORMATS = ("svg", "png", "dot")
ENGINES = ("auto", "graphviz", "builtin")

__all__ = [
    "ENGINES",
    "FORMATS",
    "Drawing",
    "draw_file",
    "net_drawing",
    "read_definition",
    "render",
    "to_dot",
    "to_png",
    "to_svg",
]


def format_of(path: str | os.PathLike[str]) -> str:
    """The picture format a file name asks for (its extension)."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt == "gv":
        fmt = "dot"
    if fmt not in FORMATS:
        raise CaffeCompatError(
            f"cannot tell the format from the extension: use .svg, .png or .dot "
            f"(or name it with --format {'|'.join(FORMATS)})",
            path=str(path),
        )
    return fmt


def render(drawing: Drawing, fmt: str, engine: str = "auto") -> tuple[bytes, str]:
    """The picture's bytes in ``fmt`` and the engine that drew it (``graphviz``, ``builtin``,
    or ``text`` for DOT); ``engine="graphviz"`` where Graphviz is missing is one clear error."""
    if fmt not in FORMATS:
        raise CaffeCompatError(f"unknown picture format {fmt!r}: one of {', '.join(FORMATS)}")
    if engine not in ENGINES:
        raise CaffeCompatError(f"unknown drawing engine {engine!r}: one of {', '.join(ENGINES)}")
    if fmt == "dot":
        return to_dot(drawing).encode("utf-8"), "text"
    use_graphviz = engine == "graphviz" or (engine == "auto" and graphviz_program() is not None)
    if use_graphviz:
        return run_graphviz(to_dot(drawing), fmt), "graphviz"
    if fmt == "svg":
        return to_svg(drawing).encode("utf-8"), "builtin"
    return to_png(drawing), "builtin"


def draw_file(
    prototxt: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    rankdir: str = "LR",
    phase: str | None = None,
    stages: tuple[str, ...] = (),
    level: int = 0,
    engine: str = "auto",
    display_lrm: bool = False,
    allow_unknown_fields: bool = False,
) -> tuple[Drawing, str]:
    """Draw a prototxt into ``output`` (written atomically); the drawing and its engine."""
    from ..io.atomic import atomic_output

    fmt = fmt or format_of(output)
    net = read_definition(prototxt, allow_unknown_fields=allow_unknown_fields)
    drawing = net_drawing(
        net, rankdir=rankdir, phase=phase, stages=stages, level=level, display_lrm=display_lrm
    )
    data, used = render(drawing, fmt, engine)
    with atomic_output(output) as tmp:
        tmp.write_bytes(data)
    return drawing, used
