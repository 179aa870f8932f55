"""The built-in renderer: a Drawing laid out by ``layout.py`` as one SVG element, standalone or
inline in an HTML page (no external font, image or stylesheet; ids prefixed so several drawings
can share a page)."""

from __future__ import annotations

from html import escape

from ..printable import printable
from .layout import Layout, layout
from .model import Drawing, Shape

FONT_SIZE = 12.0
CHAR_WIDTH = 7.0  # a generous average advance of a 12 px sans-serif glyph
LINE_HEIGHT = 15.0
BLOB_HEIGHT = 28.0


def measure(shape: Shape) -> tuple[float, float]:
    """Width and height a shape needs for its label."""
    longest = max((len(printable(line)) for line in shape.lines), default=1)
    if shape.kind == "blob":
        return longest * CHAR_WIDTH + 30.0, BLOB_HEIGHT
    return longest * CHAR_WIDTH + 16.0, len(shape.lines) * LINE_HEIGHT + 10.0


def place(drawing: Drawing) -> Layout:
    """The built-in layout of a drawing's shapes and edges."""
    index = {shape.id: i for i, shape in enumerate(drawing.shapes)}
    edges = [(index[e.source], index[e.target]) for e in drawing.edges]
    return layout([measure(s) for s in drawing.shapes], edges, drawing.rankdir)


def _text(value: str) -> str:
    return escape(printable(value), quote=True)


def _path(points: list[tuple[float, float]], vertical: bool) -> str:
    """Straight ends joined by cubic curves that leave and enter along the rank direction."""
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for (px, py), (qx, qy) in zip(points, rest):
        if vertical:
            my = (py + qy) / 2
            parts.append(f"C{px:.1f},{my:.1f} {qx:.1f},{my:.1f} {qx:.1f},{qy:.1f}")
        else:
            mx = (px + qx) / 2
            parts.append(f"C{mx:.1f},{py:.1f} {mx:.1f},{qy:.1f} {qx:.1f},{qy:.1f}")
    return " ".join(parts)


def _shape(shape: Shape, x: float, y: float, w: float, h: float) -> list[str]:
    stroke = ' stroke-width="3.5" stroke="#B00020"' if shape.marked else ""
    cls = "layer" if shape.kind == "layer" else "blob"
    extra = f' data-type="{_text(shape.type)}"' if shape.kind == "layer" else ""
    note = f"\n{shape.note}" if shape.note else ""
    out = [
        f'<g class="{cls}{" marked" if shape.marked else ""}" data-name="{_text(shape.name)}"'
        f"{extra}><title>{_text(' '.join(shape.lines) + note)}</title>"
    ]
    if shape.kind == "blob":
        out.append(
            f'<ellipse cx="{x:.1f}" cy="{y:.1f}" rx="{w / 2:.1f}" ry="{h / 2:.1f}" '
            f'fill="{shape.fill}"{stroke}/>'
        )
    else:
        out.append(
            f'<rect x="{x - w / 2:.1f}" y="{y - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'rx="3" fill="{shape.fill}"{stroke}/>'
        )
    first = y - (len(shape.lines) - 1) * LINE_HEIGHT / 2 + FONT_SIZE * 0.35
    for i, line in enumerate(shape.lines):
        weight = ' font-weight="bold"' if i == 0 and shape.kind == "layer" else ""
        out.append(
            f'<text x="{x:.1f}" y="{first + i * LINE_HEIGHT:.1f}"{weight}>{_text(line)}</text>'
        )
    out.append("</g>")
    return out


def to_svg(drawing: Drawing, placed: Layout | None = None, *, prefix: str = "net") -> str:
    """One ``<svg>`` element (valid standalone as a file, and inline in HTML)."""
    placed = placed or place(drawing)
    vertical = placed.rankdir in ("TB", "BT")
    w, h = placed.width, placed.height
    arrow = f"{prefix}-arrow"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="net-drawing" id="{prefix}" '
        f'width="{w:.0f}" height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}" '
        f'data-rankdir="{placed.rankdir}" font-family="Helvetica, Arial, sans-serif" '
        f'font-size="{FONT_SIZE:.0f}">',
        f"<title>{_text(drawing.name)}</title>",
        f'<defs><marker id="{arrow}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#444"/></marker></defs>',
        '<rect width="100%" height="100%" fill="#FFFFFF"/>',
        '<g class="edges" fill="none" stroke="#444" stroke-width="1.2">',
    ]
    labels = []
    for edge, route in zip(
        [e for e in drawing.edges if e.source != e.target], placed.routes, strict=True
    ):
        out.append(f'<path d="{_path(route.points, vertical)}" marker-end="url(#{arrow})"/>')
        if edge.label:
            (px, py), (qx, qy) = route.points[0], route.points[1]
            labels.append(
                f'<text x="{(px + qx) / 2 + 4:.1f}" y="{(py + qy) / 2:.1f}" fill="#555" '
                f'font-size="10">{_text(edge.label)}</text>'
            )
    out.append("</g>")
    out.extend(labels)
    out.append('<g class="shapes" text-anchor="middle" stroke="#333" stroke-width="1">')
    for shape, node in zip(drawing.shapes, placed.nodes):
        lines = _shape(shape, node.x, node.y, node.width, node.height)
        out.extend(line.replace("<text ", '<text stroke="none" ') for line in lines)
    out.append("</g></svg>")
    return "\n".join(out) + "\n"
