"""``verify --report report.html``: the report as one self-contained page to look at instead of
read. The verdict on top; per judge and back end a plot of error / tolerance for every blob in
graph order (log scale, the tolerance line at 1, the first blob over it marked); the net drawn
with each layer coloured by its worst ratio; a sortable table of the same rows; the files each
side read and the versions of every runtime.

Inline SVG, CSS and script only: no fonts, images, stylesheets or scripts from anywhere (a
Content-Security-Policy forbids them), so it opens from a file:// URL on a machine offline.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from importlib import metadata
from typing import Any

from ..ir.load import LoadedNet
from ..printable import printable
from .compare import Comparison, Report, Tolerance

PLOT_WIDTH, PLOT_HEIGHT = 920, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 16, 22, 34
FLOOR = 1e-8  # ratios below (exact zeros too) sit on the plot's floor
CEILING = 1e6  # and above (infinite errors, shape mismatches) on its top
# Distributions whose versions the page records (the runtimes judges and back ends use).
RUNTIMES = (
    "caffe-compat",
    "numpy",
    "protobuf",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "opencv-python-headless",
    "opencv-python",
    "opencv-contrib-python",
    "h5py",
    "pydot",
)


def _t(value: object) -> str:
    """Text from files or numbers, safe inside HTML text and attributes."""
    return escape(printable(str(value)), quote=True)


def ratio(row: Comparison) -> float:
    """Error over the blob's tolerance: above 1 fails."""
    if row.limit > 0:
        return row.max_abs / row.limit
    return float("inf") if row.max_abs > 0 else 0.0


@dataclass
class Pair:
    """The rows of one back end against one judge, in graph order."""

    backend: str
    reference: str
    rows: list[Comparison]

    @property
    def first_failure(self) -> int | None:
        return next((i for i, row in enumerate(self.rows) if not row.passed), None)


def pairs(report: Report, order: Mapping[str, int]) -> list[Pair]:
    """Rows grouped per (back end, judge), each group sorted in graph order."""
    grouped: dict[tuple[str, str], list[Comparison]] = {}
    for row in report.comparisons:
        grouped.setdefault((row.backend, row.reference), []).append(row)
    return [
        Pair(backend, reference, sorted(rows, key=lambda r: order.get(r.value, len(order))))
        for (backend, reference), rows in grouped.items()
    ]


def first_failure(found: list[Pair], order: Mapping[str, int]) -> Comparison | None:
    """The failing row earliest in the graph over every pair (where the error starts)."""
    failing = [p.rows[p.first_failure] for p in found if p.first_failure is not None]
    return min(failing, key=lambda r: order.get(r.value, len(order)), default=None)


def runtime_versions() -> dict[str, str]:
    """Python, the platform, and each runtime distribution's version (read from package
    metadata: nothing is imported for it); CUDA's where torch is already loaded."""
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in RUNTIMES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch.version, "cuda", None):
        found["torch CUDA"] = str(torch.version.cuda)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        found["cv2 module"] = str(cv2.__version__)
    return found


# --- the plot --------------------------------------------------------------------------------


def _y(value: float, low: float, high: float) -> float:
    value = min(max(value, low), high)
    span = math.log10(high) - math.log10(low)
    inner = PLOT_HEIGHT - PAD_TOP - PAD_BOTTOM
    return PAD_TOP + inner * (1 - (math.log10(value) - math.log10(low)) / span)


def _range(rows: list[Comparison]) -> tuple[float, float]:
    """Whole decades around every finite nonzero ratio and the tolerance line."""
    finite = [r for r in map(ratio, rows) if 0 < r < float("inf")]
    low = max(min(finite, default=1e-3), FLOOR)
    high = min(max(finite, default=1.0), CEILING)
    low = 10.0 ** min(math.floor(math.log10(low)), -1)
    high = 10.0 ** max(math.ceil(math.log10(high)) + (high >= 1), 1)
    if any(r == 0 for r in map(ratio, rows)):
        low = max(low / 10, FLOOR)
    return low, high


def plot_svg(pair: Pair, index: int) -> str:
    """Error / tolerance per blob: points in graph order (red over the line), log y axis."""
    rows, width = pair.rows, PLOT_WIDTH
    low, high = _range(rows)
    inner_w = width - PAD_LEFT - PAD_RIGHT
    step = inner_w / max(len(rows) - 1, 1)

    def x(i: int) -> float:
        return PAD_LEFT + (i * step if len(rows) > 1 else inner_w / 2)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" id="plot-{index}" '
        f'width="{width}" height="{PLOT_HEIGHT}" viewBox="0 0 {width} {PLOT_HEIGHT}" '
        f'data-backend="{_t(pair.backend)}" data-reference="{_t(pair.reference)}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="11">',
        f"<title>error / tolerance per blob: {_t(pair.backend)} vs {_t(pair.reference)}</title>",
        f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{inner_w}" '
        f'height="{PLOT_HEIGHT - PAD_TOP - PAD_BOTTOM}" fill="#FAFAFA" stroke="#CCC"/>',
    ]
    for power in range(round(math.log10(low)), round(math.log10(high)) + 1):
        y = _y(10.0**power, low, high)
        out.append(
            f'<line x1="{PAD_LEFT}" x2="{width - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#EEE"/><text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
            f'fill="#555">1e{power}</text>'
        )
    line_y = _y(1.0, low, high)
    out.append(
        f'<line class="tolerance" x1="{PAD_LEFT}" x2="{width - PAD_RIGHT}" y1="{line_y:.1f}" '
        f'y2="{line_y:.1f}" stroke="#B00020" stroke-dasharray="6 4"/>'
        f'<text x="{width - PAD_RIGHT - 4}" y="{line_y - 5:.1f}" text-anchor="end" '
        'fill="#B00020">tolerance</text>'
    )
    points = " ".join(f"{x(i):.1f},{_y(ratio(r), low, high):.1f}" for i, r in enumerate(rows))
    out.append(f'<polyline points="{points}" fill="none" stroke="#8AA" stroke-width="1"/>')
    if pair.first_failure is not None:
        out.append(_first_mark(pair, x(pair.first_failure)))
    for i, row in enumerate(rows):
        value = ratio(row)
        colour = "#5CB85C" if row.passed else "#E8443A"
        out.append(
            f'<circle class="{"ok" if row.passed else "fail"}" cx="{x(i):.1f}" '
            f'cy="{_y(value, low, high):.1f}" r="3" fill="{colour}"><title>{_t(row.value)}: '
            f"max abs {row.max_abs:.3g}, limit {row.limit:.3g}, ratio {value:.3g}"
            f"{' (' + _t(row.note) + ')' if row.note else ''}</title></circle>"
        )
    out.append(
        f'<text x="{PAD_LEFT + inner_w / 2:.0f}" y="{PLOT_HEIGHT - 8}" text-anchor="middle" '
        f'fill="#555">{len(rows)} blobs in graph order</text></svg>'
    )
    return "\n".join(out)


def _first_mark(pair: Pair, x: float) -> str:
    row = pair.rows[pair.first_failure or 0]
    anchor = "end" if x > PLOT_WIDTH * 0.6 else "start"
    shift = -5 if anchor == "end" else 5
    return (
        f'<g class="first-failure" data-blob="{_t(row.value)}"><line x1="{x:.1f}" x2="{x:.1f}" '
        f'y1="{PAD_TOP}" y2="{PLOT_HEIGHT - PAD_BOTTOM}" stroke="#B00020" stroke-width="1.5"/>'
        f'<text x="{x + shift:.1f}" y="{PAD_TOP + 12}" text-anchor="{anchor}" fill="#B00020" '
        f'font-weight="bold">first over: {_t(row.value)}</text></g>'
    )


# --- the drawing, the table, the files --------------------------------------------------------


def drawing_svg(
    loaded: LoadedNet, ratios: Mapping[str, float], first_layer: str | None, state: Any
) -> str:
    """The net as draw_net.py drew it (top to bottom), layers coloured by worst ratio."""
    from ..draw.model import net_drawing, ratio_colour
    from ..draw.svg import to_svg

    drawing = net_drawing(
        loaded.net, rankdir="TB", phase=state.phase, stages=state.stages, level=state.level
    )

    def fill(shape: Any) -> tuple[str, str]:
        if shape.name not in ratios:
            return "#FFFFFF", "not compared"
        value = ratios[shape.name]
        return ratio_colour(value), f"worst error / tolerance {value:.3g}"

    coloured = drawing.recoloured(fill, marked=[first_layer] if first_layer else [])
    return to_svg(coloured, prefix="net")


def layer_ratios(report: Report, layer_of: Mapping[str, str]) -> dict[str, float]:
    """Each layer's worst ratio over its outputs, every back end and judge."""
    worst: dict[str, float] = {}
    for row in report.comparisons:
        layer = layer_of.get(row.value)
        if layer is not None:
            worst[layer] = max(worst.get(layer, 0.0), ratio(row))
    return worst


def _num(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.3g}"


def table_html(
    found: list[Pair],
    order: Mapping[str, int],
    layer_of: Mapping[str, str],
    first: Comparison | None = None,
) -> str:
    """Every row; the page's script sorts it by any column (data-sort holds the key) and
    shows one layer's rows when the drawing's layer is clicked (data-layer). The row where the
    error starts is ``first``."""
    head = [
        ("#", "num"),
        ("blob", "text"),
        ("layer", "text"),
        ("back end", "text"),
        ("judge", "text"),
        ("max abs", "num"),
        ("max |ref|", "num"),
        ("limit", "num"),
        ("error / tolerance", "num"),
        ("", "text"),
    ]
    out = ['<table id="rows" class="sortable"><thead><tr>']
    out.extend(f'<th data-kind="{kind}" tabindex="0">{_t(name)}</th>' for name, kind in head)
    out.append("</tr></thead><tbody>")
    for pair in found:
        for row in pair.rows:
            value = ratio(row)
            key = "1e999" if value == float("inf") else repr(value)
            cells = [
                (str(order.get(row.value, -1)), str(order.get(row.value, -1))),
                (row.value, row.value),
                (layer_of.get(row.value, ""), layer_of.get(row.value, "")),
                (row.backend, row.backend),
                (row.reference, row.reference),
                (_num(row.max_abs), "1e999" if row.max_abs == float("inf") else repr(row.max_abs)),
                (_num(row.max_ref), repr(row.max_ref)),
                (_num(row.limit), repr(row.limit)),
                (_num(value), key),
                ("ok" if row.passed else f"FAIL{' (' + row.note + ')' if row.note else ''}", ""),
            ]
            cls = "ok" if row.passed else "fail first" if row is first else "fail"
            layer = _t(layer_of.get(row.value, ""))
            out.append(f'<tr class="{cls}" data-layer="{layer}">')
            out.extend(f'<td data-sort="{_t(k)}">{_t(text)}</td>' for text, k in cells)
            out.append("</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def sources_html(sources: Mapping[str, Mapping[str, Any]]) -> str:
    """The exact bytes each side read: path, size, SHA-256, git blob id."""
    out = [
        "<table><thead><tr><th>read by</th><th>file</th><th>path</th><th>bytes</th>"
        "<th>SHA-256</th><th>git blob</th><th>note</th></tr></thead><tbody>"
    ]
    for reader, files in sources.items():
        for kind, record in files.items():
            if record is None:
                out.append(
                    f"<tr><td>{_t(reader)}</td><td>{_t(kind)}</td>"
                    '<td colspan="5">from memory (no file)</td></tr>'
                )
                continue
            out.append(
                f"<tr><td>{_t(reader)}</td><td>{_t(kind)}</td><td>{_t(record['path'])}</td>"
                f"<td>{record['size']:,}</td><td><code>{_t(record['sha256'])}</code></td>"
                f"<td><code>{_t(record.get('git_blob', ''))}</code></td>"
                f"<td>{_t(record.get('note', ''))}</td></tr>"
            )
    out.append("</tbody></table>")
    return "\n".join(out)


def _definition_list(items: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{_t(k)}</th><td>{_t(v)}</td></tr>" for k, v in items)
    return f'<table class="facts">{rows}</table>'


# --- the page --------------------------------------------------------------------------------

STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
h2 { font-size: 16px; margin: 28px 0 8px 0; border-bottom: 1px solid #DDD; }
h3 { font-size: 13px; margin: 14px 0 4px 0; font-weight: normal; }
.verdict { padding: 14px 18px; border-radius: 6px; color: #FFF; }
.verdict.pass { background: #2E7D32; } .verdict.fail { background: #B00020; }
.verdict p { margin: 4px 0 0 0; }
table { border-collapse: collapse; font-size: 12px; }
td, th { padding: 3px 8px; border-bottom: 1px solid #EEE; text-align: left; vertical-align: top; }
table.sortable th { cursor: pointer; background: #F3F3F3; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
tr.fail td { background: #FDECEA; }
tr.first td { font-weight: bold; border-top: 2px solid #B00020; border-bottom: 2px solid #B00020; }
table.hide-ok tr.ok, tr.other-layer { display: none; }
svg.net-drawing g.layer { cursor: pointer; }
.drawing { overflow: auto; max-height: 900px; border: 1px solid #DDD; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 4px; font-size: 12px; }
code { font-size: 11px; word-break: break-all; }
"""

SCRIPT = """
(function () {
  function key(row, col) { return row.cells[col].getAttribute('data-sort'); }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      function sort() {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
        var numeric = th.getAttribute('data-kind') === 'num';
        rows.sort(function (a, b) {
          var x = key(a, col), y = key(b, col);
          if (numeric) { x = parseFloat(x); y = parseFloat(y); }
          return dir * ((x > y) - (x < y));
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter') { sort(); } });
    });
  });
  var table = document.getElementById('rows');
  var filter = document.getElementById('layer-filter');
  function showLayer(name) {
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
      r.classList.toggle('other-layer', name !== null && r.getAttribute('data-layer') !== name);
    });
    filter.hidden = name === null;
    document.getElementById('layer-name').textContent = name === null ? '' : name;
    if (name !== null) { table.scrollIntoView(); }
  }
  var layers = document.querySelectorAll('svg.net-drawing g.layer');
  Array.prototype.forEach.call(layers, function (g) {
    g.addEventListener('click', function () { showLayer(g.getAttribute('data-name')); });
  });
  document.getElementById('show-all').addEventListener('click', function () {
    showLayer(null);
  });
  var only = document.getElementById('failures-only');
  if (only) {
    only.addEventListener('change', function () {
      document.getElementById('rows').classList.toggle('hide-ok', only.checked);
    });
  }
})();
"""


def verdict_html(report: Report, first: Comparison | None, layer_of: Mapping[str, str]) -> str:
    """The answer first: pass or fail, and where the error starts."""
    rows = report.comparisons
    failing = sum(not r.passed for r in rows)
    if report.passed:
        what = f"PASS: all {len(rows)} blob comparisons within tolerance"
        detail = ""
    elif not rows:
        what, detail = "FAIL: nothing was compared", ""
    elif first is None:
        what = f"FAIL: every blob within tolerance, but the top class differs (of {len(rows)})"
        detail = ""
    else:
        what = f"FAIL: {failing} of {len(rows)} blob comparisons over tolerance"
        layer = layer_of.get(first.value, "?")
        detail = (
            f'<p id="first-failure" data-blob="{_t(first.value)}" data-layer="{_t(layer)}">'
            f"The error starts at blob <b>{_t(first.value)}</b> (layer {_t(layer)}): "
            f"{_t(first.backend)} vs {_t(first.reference)}, max abs {_num(first.max_abs)}, "
            f"limit {_num(first.limit)}, error / tolerance {_num(ratio(first))}"
            f"{' (' + _t(first.note) + ')' if first.note else ''}</p>"
        )
    cls = "pass" if report.passed else "fail"
    return f'<div class="verdict {cls}" id="verdict"><h1>{_t(what)}</h1>{detail}</div>'


def _legend() -> str:
    from ..draw.model import ratio_colour

    stops = [(0.0, "exact"), (1e-4, "1e-4"), (1e-2, "1e-2"), (0.3, "0.3"), (1.0, "1")]
    spans = [f'<span style="background:{ratio_colour(v)}">{_t(t)}</span>' for v, t in stops]
    spans.append(f'<span style="background:{ratio_colour(2.0)};color:#FFF">over tolerance</span>')
    spans.append('<span style="background:#FFF;border:1px solid #CCC">not compared</span>')
    return '<p class="legend">worst error / tolerance of each layer: ' + "".join(spans) + "</p>"


def report_page(
    report: Report,
    loaded: LoadedNet,
    *,
    tolerance: Tolerance | None = None,
    state: Any = None,
    versions: Mapping[str, str] | None = None,
) -> str:
    """The whole page as text. ``state``: the NetState the net was verified in (the drawing
    shows its layers; TEST by default)."""
    from ..ir.phase import NetState

    graph = loaded.graph
    state = state or NetState.make()
    order = {value: i for i, value in enumerate(graph.values)}
    layer_of = {value: node.name for node in graph.nodes for value in node.outputs}
    found = pairs(report, order)
    first = first_failure(found, order)
    tolerance = tolerance or Tolerance()
    name = graph.name or os.path.basename(loaded.prototxt_path)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
        f"<title>caffe-compat verify: {_t(name)}</title><style>{STYLE}</style></head><body>",
        verdict_html(report, first, layer_of),
        _definition_list(
            [
                ("net", f"{name} ({loaded.prototxt_path}, {loaded.prototxt_format})"),
                ("inputs", f"{report.inputs} (batch {report.batch})"),
                (
                    "tolerance",
                    f"max|ours - judge| <= max({tolerance.rtol:g} x max|judge|, "
                    f"{tolerance.atol:g})",
                ),
            ]
        ),
        "<h2>Error / tolerance per blob</h2>",
    ]
    shown = sorted(found, key=lambda p: p.first_failure is None)  # failing pairs first
    for index, pair in enumerate(shown):
        mark = ""
        if pair.first_failure is not None:
            mark = f": first over the line <b>{_t(pair.rows[pair.first_failure].value)}</b>"
        parts.append(f"<h3>{_t(pair.backend)} vs {_t(pair.reference)}{mark}</h3>")
        parts.append(plot_svg(pair, index))
    if not found:
        parts.append("<p>No comparisons: no judge and back end ran on the same blobs.</p>")
    ratios = layer_ratios(report, layer_of)
    parts += [
        "<h2>The net</h2>",
        _legend(),
        '<div class="drawing">',
        drawing_svg(loaded, ratios, layer_of.get(first.value) if first else None, state),
        "</div>",
        "<h2>Every comparison</h2>",
        '<p><label><input type="checkbox" id="failures-only"> failures only</label> '
        "(click a column to sort, a layer in the drawing to see its rows) "
        '<span id="layer-filter" hidden>rows of layer <b id="layer-name"></b> '
        '<button type="button" id="show-all">show all</button></span></p>',
        table_html(found, order, layer_of, first),
    ]
    parts += _extras(report, versions)
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def _extras(report: Report, versions: Mapping[str, str] | None) -> list[str]:
    """Top-class agreement, judges and back ends, files read, runtime versions."""
    parts = []
    if report.argmax or report.distinct_classes:
        items = [
            (
                f"{a.output}: {a.backend} vs {a.reference}",
                f"{a.agree}/{a.total} agree"
                + (f" (+{a.ties} at near-ties)" if a.ties else "")
                + ("" if a.passed else " (FAIL)"),
            )
            for a in report.argmax
        ]
        items += [
            (f"{o}: variety", f"{n} distinct classes") for o, n in report.distinct_classes.items()
        ]
        parts += ["<h2>Top class</h2>", _definition_list(items)]
    states = {**report.references, **report.backends}
    states.update({f"not compared: {k}": v for k, v in report.skipped_values.items()})
    parts += ["<h2>Judges and back ends</h2>", _definition_list(states.items())]
    parts += ["<h2>Files read</h2>", sources_html(report.sources)]
    versions = runtime_versions() if versions is None else versions
    parts += ["<h2>Runtimes</h2>", _definition_list(versions.items())]
    return parts


def write_report_page(
    path: str | os.PathLike[str], report: Report, loaded: LoadedNet, **options: Any
) -> None:
    """``report_page`` written atomically (normal permissions)."""
    from ..io.atomic import atomic_output

    text = report_page(report, loaded, **options)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
