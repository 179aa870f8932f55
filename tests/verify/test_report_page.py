"""verify's HTML report, read without a browser: the verdict and the first failing blob of a net
with a planted error (one filter of conv2 wrong in the ONNX model, judged by the float64
reference), plots on a log scale with the tolerance line and the first blob over it marked, the
drawing coloured by error, a sortable table, files and runtimes, nothing fetched from anywhere,
names from files escaped."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest
from _paths import ROOT
from _planted import FIRST_FAILING, PLANTED_LAYER, planted_files, planted_model, weights_for

from caffe_compat.draw.model import ratio_colour
from caffe_compat.io import write_caffemodel
from caffe_compat.io.writer import definitions_only
from caffe_compat.ir.load import load_net, load_net_text
from caffe_compat.verify import verify_loaded
from caffe_compat.verify.compare import Comparison, Report
from caffe_compat.verify.report_page import (
    _y,
    first_failure,
    pairs,
    plot_svg,
    ratio,
    report_page,
    runtime_versions,
)

SVG = "{http://www.w3.org/2000/svg}"


class Elements(HTMLParser):
    """Every start tag with its attributes, and the inline SVG blocks as text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", page, re.S)]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    _, _, onnx_path, loaded = planted_files(tmp_path_factory.mktemp("planted"))
    report = verify_loaded(
        loaded,
        onnx_model=onnx_path.read_bytes(),
        backends=("onnxruntime",),
        against=["float64"],
        devices=("cpu",),
        progress=False,
        batch=2,
    )
    return report, loaded, report_page(report, loaded)


def test_verdict_names_the_first_failing_blob_where_the_error_was_planted(planted):
    report, _, page = planted
    assert not report.passed
    failing = [row.value for row in report.comparisons if not row.passed]
    assert failing[0] == FIRST_FAILING and "conv1" not in failing  # upstream stays within
    verdict = page.split('<div class="verdict fail" id="verdict">', 1)[1].split("</div>", 1)[0]
    assert f"FAIL: {len(failing)} of {len(report.comparisons)} blob comparisons" in verdict
    assert f'data-blob="{FIRST_FAILING}" data-layer="{PLANTED_LAYER}"' in verdict
    assert page.index('id="verdict"') < page.index("<h2>")  # on top


def test_plot_log_scale_tolerance_line_and_first_failure_mark(planted):
    report, _, page = planted
    (plot,) = [s for s in svgs(page) if s.get("class") == "plot"]
    assert plot.get("data-backend") == "onnxruntime-cpu" and plot.get("data-reference") == "float64"
    circles = plot.findall(f"{SVG}circle")
    assert len(circles) == len(report.comparisons)
    line_y = float(plot.find(f"{SVG}line[@class='tolerance']").get("y1"))
    for circle, row in zip(circles, report.comparisons):
        assert circle.get("class") == ("ok" if row.passed else "fail")
        assert (float(circle.get("cy")) < line_y) == (not row.passed)  # above the line: over
    xs = [float(c.get("cx")) for c in circles]
    assert xs == sorted(xs)  # graph order left to right
    (mark,) = plot.findall(f"{SVG}g[@class='first-failure']")
    assert mark.get("data-blob") == FIRST_FAILING
    assert float(mark.find(f"{SVG}line").get("x1")) == xs[2]
    ticks = [t.text for t in plot.findall(f"{SVG}text") if t.text and t.text.startswith("1e")]
    assert "1e0" in ticks and len(ticks) >= 3


def test_log_axis_spaces_decades_evenly():
    a, b, c = (_y(v, 1e-6, 1e2) for v in (1e-3, 1e-2, 1e-1))
    assert a - b == pytest.approx(b - c) and a > b > c
    assert _y(0.0, 1e-6, 1e2) == _y(1e-9, 1e-6, 1e2)  # exact zeros sit on the floor
    assert _y(math.inf, 1e-6, 1e2) == _y(1e2, 1e-6, 1e2)


def test_drawing_coloured_by_worst_ratio_and_the_planted_layer_marked(planted):
    report, loaded, page = planted
    (drawing,) = [s for s in svgs(page) if s.get("class") == "net-drawing"]
    layers = {
        g.get("data-name"): g for g in drawing.iter(f"{SVG}g") if "layer" in g.get("class", "")
    }
    assert set(layers) == {layer.name for layer in loaded.net.layer}
    worst: dict[str, float] = {}
    layer_of = {v: n.name for n in loaded.graph.nodes for v in n.outputs}
    for row in report.comparisons:
        worst[layer_of[row.value]] = max(worst.get(layer_of[row.value], 0), ratio(row))
    for name, group in layers.items():
        fill = group.find(f"{SVG}rect").get("fill")
        assert fill == (ratio_colour(worst[name]) if name in worst else "#FFFFFF"), name
    assert [n for n, g in layers.items() if "marked" in g.get("class")] == [PLANTED_LAYER]
    assert layers["conv1"].find(f"{SVG}rect").get("fill") == ratio_colour(worst["conv1"])
    assert worst["conv1"] < 1 < worst["conv2"]


def test_table_rows_with_sort_keys(planted):
    report, _, page = planted
    table = page.split('<table id="rows" class="sortable">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(
        r'<tr class="(ok|fail|fail first)" data-layer="([^"]*)">(.*?)</tr>', table, re.S
    )
    assert len(rows) == len(report.comparisons)
    assert [r[0] for r in rows].count("fail first") == 1 and rows[2][0] == "fail first"
    assert [r[1] for r in rows[:3]] == ["conv1", "relu1", PLANTED_LAYER]
    rows = [(cls, cells) for cls, _, cells in rows]
    keys = re.findall(r'data-sort="([^"]*)"', rows[2][1])
    assert keys[1] == FIRST_FAILING and keys[2] == PLANTED_LAYER
    assert float(keys[8]) == pytest.approx(ratio(report.comparisons[2]))
    assert rows[3][0] == "fail" and rows[0][0] == "ok"
    heads = re.findall(r'<th data-kind="(num|text)"', table)
    assert heads[0] == "num" and heads[8] == "num" and heads[1] == "text"


def test_self_contained_nothing_to_fetch(planted):
    page = planted[2]
    parser = Elements()
    parser.feed(page)
    tags = {tag for tag, _ in parser.tags}
    assert not tags & {"link", "img", "iframe", "object", "embed", "image", "use", "audio", "video"}
    for tag, attrs in parser.tags:
        assert "src" not in attrs and "href" not in attrs and "xlink:href" not in attrs, tag
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)  # only the SVG namespace
    assert "@import" not in page and "url(" not in page.replace("url(#net-arrow)", "")
    (csp,) = [a for t, a in parser.tags if t == "meta" and a.get("http-equiv")]
    assert csp["content"].startswith("default-src 'none';")


def test_files_and_runtimes(planted):
    report, _, page = planted
    record = report.sources["float64"]["weights"]
    assert record["sha256"] in page and record["git_blob"] in page
    versions = runtime_versions()
    assert versions["numpy"] == np.__version__
    assert f"<th>numpy</th><td>{np.__version__}</td>" in page
    assert "<th>onnxruntime</th>" in page


def rows_for(values: list[str], ratios: list[float], backend="torch-cpu", reference="float64"):
    out = []
    for value, r in zip(values, ratios):
        out.append(Comparison(value, value, backend, reference, r * 1e-4, 1.0, 1e-4, r <= 1))
    return out


HOSTILE = """name: "h"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "<b>a</b>" type: "ReLU" bottom: "x" top: "</svg><script>alert(1)</script>" }
layer { name: "b\\x1b" type: "ReLU" bottom: "</svg><script>alert(1)</script>" top: "y" }
"""


def test_hand_made_rows_pass_and_fail_and_escaped_names():
    loaded = load_net_text(HOSTILE)
    values = [v for v in loaded.graph.values if v not in loaded.graph.inputs]
    report = Report(inputs="given", batch=1)
    report.comparisons = rows_for(values, [0.0, 0.5])
    page = report_page(report, loaded, versions={})
    assert 'class="verdict pass"' in page and "PASS: all 2 blob comparisons" in page
    assert "first-failure" not in page
    assert "<script>alert" not in page and "&lt;/svg&gt;&lt;script&gt;" in page
    assert "\x1b" not in page
    for element in svgs(page):  # each inline SVG is well-formed on its own
        assert element.tag == f"{SVG}svg"
    # two back ends; the earliest failing blob over both is the verdict's
    report.comparisons = rows_for(values, [0.1, 3.0]) + rows_for(values, [2.0, 4.0], "onnx")
    order = {v: i for i, v in enumerate(loaded.graph.values)}
    found = pairs(report, order)
    assert [p.first_failure for p in found] == [1, 0]
    assert first_failure(found, order).backend == "onnx"
    page = report_page(report, loaded, versions={})
    assert "FAIL: 3 of 4 blob comparisons over tolerance" in page
    assert page.count('class="first-failure"') == 2


def test_infinite_and_zero_ratios_are_plotted_on_the_edges():
    report = Report(inputs="given", batch=1)
    report.comparisons = rows_for(["a", "b"], [0.0, 1.0])
    report.comparisons.append(
        Comparison(
            "c",
            "c",
            "torch-cpu",
            "float64",
            math.inf,
            0.0,
            0.0,
            False,
            "shape [1] vs reference [2]",
        )
    )
    (pair,) = pairs(report, {"a": 0, "b": 1, "c": 2})
    plot = ET.fromstring(plot_svg(pair, 0))
    ys = [float(c.get("cy")) for c in plot.findall(f"{SVG}circle")]
    assert ys[0] == max(ys) and ys[2] == min(ys)  # zero on the floor, infinity on top
    assert "shape [1] vs reference [2]" in "".join(plot.itertext())


@pytest.mark.slow
def test_googlenet_with_a_planted_error_shows_where_it_starts(tmp_path):
    """The zoo's GoogLeNet, one filter of inception_4c/3x3 wrong in its ONNX model: every blob
    before it within tolerance, the page names it and marks it in the plot and the drawing."""
    prototxt, layer = ROOT / "zoo/bvlc_googlenet.prototxt", "inception_4c/3x3"
    bare = load_net(prototxt)
    weights = tmp_path / "googlenet.caffemodel"
    write_caffemodel(weights, definitions_only(bare.net.layer), weights_for(bare))
    loaded = load_net(prototxt, weights)
    report = verify_loaded(
        loaded,
        onnx_model=planted_model(loaded, layer),
        backends=("onnxruntime",),
        against=["float64"],
        devices=("cpu",),
        progress=False,
        batch=1,
    )
    order = loaded.graph.values
    start = order.index(f"{layer}@{layer}")
    failing = [order.index(row.value) for row in report.comparisons if not row.passed]
    assert min(failing) == start and order.index(f"{layer[:-4]}/output") in failing
    assert order.index("loss3/classifier") in failing  # and on to the classifier
    assert len(report.comparisons) == len(order) - 1  # every blob but the input
    page = report_page(report, loaded)
    assert f'id="first-failure" data-blob="{layer}@{layer}" data-layer="{layer}"' in page
    (plot,) = [s for s in svgs(page) if s.get("class") == "plot"]
    assert plot.find(f"{SVG}g[@class='first-failure']").get("data-blob") == f"{layer}@{layer}"
    (drawing,) = [s for s in svgs(page) if s.get("class") == "net-drawing"]
    marked = [g.get("data-name") for g in drawing.iter(f"{SVG}g") if "marked" in g.get("class", "")]
    assert marked == [layer]
