"""A Drawing as Graphviz DOT text, and rendered by Graphviz's ``dot`` program where it is
installed (the ``draw`` extra adds pydot for ``caffe_compat.pycaffe.draw``; the program itself
comes from the system: ``apt-get install graphviz``)."""

from __future__ import annotations

import shutil
import subprocess

from ..errors import CaffeCompatError
from ..printable import printable
from .model import Drawing

DOT_TIMEOUT_S = 300


def quote(text: str) -> str:
    """A DOT double-quoted string (control characters shown escaped, as everywhere)."""
    return '"' + printable(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(lines: list[str]) -> str:
    """Lines joined by DOT's own line break (``\\n`` inside the quotes)."""
    return '"' + "\\n".join(quote(line)[1:-1] for line in lines) + '"'


def to_dot(drawing: Drawing) -> str:
    """draw_net.py's graph: filled boxes for layers, ovals for blobs, edge labels on tops."""
    out = [
        f"digraph {quote(drawing.name)} {{",
        f"  rankdir={drawing.rankdir};",
        '  node [fontname="Helvetica", fontsize=12];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for shape in drawing.shapes:
        attributes = [f"label={_label(shape.lines)}", f'fillcolor="{shape.fill}"']
        if shape.kind == "layer":
            attributes.append('shape=box, style="filled,rounded"')
        else:
            attributes.append("shape=ellipse, style=filled")
        if shape.marked:
            attributes.append('penwidth=3.5, color="#B00020"')
        if shape.note:
            attributes.append(f"tooltip={quote(shape.note)}")
        out.append(f"  {quote(shape.id)} [{', '.join(attributes)}];")
    for edge in drawing.edges:
        label = f" [label={quote(edge.label)}]" if edge.label else ""
        out.append(f"  {quote(edge.source)} -> {quote(edge.target)}{label};")
    out.append("}")
    return "\n".join(out) + "\n"


def graphviz_program() -> str | None:
    """The path of Graphviz's ``dot``, or None where Graphviz is not installed."""
    return shutil.which("dot")


def run_graphviz(text: str, fmt: str) -> bytes:
    """``dot -T<fmt>`` on DOT text; one line when the program is missing or fails."""
    program = graphviz_program()
    if program is None:
        raise CaffeCompatError("Graphviz's dot program is not installed (apt-get install graphviz)")
    try:
        done = subprocess.run(
            [program, f"-T{fmt}"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=DOT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CaffeCompatError(f"Graphviz's dot ran over {DOT_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"]
        raise CaffeCompatError(f"Graphviz's dot failed: {lines[-1]}")
    return done.stdout
