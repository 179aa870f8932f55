"""The report page in a real browser: Debian's chromium, headless, renders the page of a net with
a planted error to a PNG with no console error, no failed check and no network request; the
plot, the drawing and the first failing blob are on it; the table sorts and filters. A control
page proves the checks see errors and requests. Skips only where chromium is not installed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _browser import Browser, find_chromium
from _planted import FIRST_FAILING, PLANTED_LAYER, planted_files

from caffe_compat.verify import verify_loaded
from caffe_compat.verify.report_page import write_report_page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="chromium not installed"),
]

CHECKS = {
    "plots": "document.querySelectorAll('svg.plot circle').length",
    "layers": "document.querySelectorAll('svg.net-drawing g.layer').length",
    "marked": "Array.from(document.querySelectorAll('svg.net-drawing g.marked'), g => g.dataset.name)",
    "first": "document.getElementById('first-failure').dataset.blob",
    "plot_mark": "document.querySelector('svg.plot g.first-failure').dataset.blob",
    "plot_box": "JSON.stringify(document.querySelector('svg.plot').getBoundingClientRect())",
    "drawing_box": "JSON.stringify(document.querySelector('svg.net-drawing').getBoundingClientRect())",
    # sort by error / tolerance, descending (two clicks), then show failures only
    "sorted": """(() => {
        const th = document.querySelectorAll('#rows th')[8];
        th.click(); th.click();
        return Array.from(document.querySelectorAll('#rows tbody tr'),
                          r => parseFloat(r.cells[8].dataset.sort));
    })()""",
    "layer_rows": """(() => {
        document.querySelector('svg.net-drawing g.layer[data-name="conv2"]')
            .dispatchEvent(new MouseEvent('click', {bubbles: true}));
        const shown = Array.from(document.querySelectorAll('#rows tbody tr'))
            .filter(r => r.offsetParent !== null).map(r => r.cells[2].textContent);
        const label = document.getElementById('layer-name').textContent;
        document.getElementById('show-all').click();
        return [label, shown];
    })()""",
    "visible_after_filter": """(() => {
        const box = document.getElementById('failures-only');
        box.click();
        return Array.from(document.querySelectorAll('#rows tbody tr'))
            .filter(r => r.offsetParent !== null).length;
    })()""",
}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    _, _, onnx_path, loaded = planted_files(folder)
    report = verify_loaded(
        loaded,
        onnx_model=onnx_path.read_bytes(),
        backends=("onnxruntime",),
        against=["float64"],
        devices=("cpu",),
        progress=False,
        batch=2,
    )
    path = folder / "report.html"
    write_report_page(path, report, loaded)
    return path, report


def test_page_renders_without_errors_or_requests(page):
    path, report = page
    with Browser() as browser:
        visit = browser.open_page(path, width=1100, height=800, full_page=True, evaluate=CHECKS)
    assert visit.errors == [] and visit.requests == []
    values = visit.values
    assert values["plots"] == len(report.comparisons)
    assert values["layers"] == 8 and values["marked"] == [PLANTED_LAYER]
    assert values["first"] == FIRST_FAILING == values["plot_mark"]
    assert '"width":920' in values["plot_box"] and '"height":240' in values["plot_box"]
    assert '"width":0' not in values["drawing_box"]
    failing = sum(not row.passed for row in report.comparisons)
    assert values["sorted"] == sorted(values["sorted"], reverse=True)
    assert values["visible_after_filter"] == failing
    assert values["layer_rows"] == [PLANTED_LAYER, [PLANTED_LAYER]]  # conv2's one output value
    image = cv2.imdecode(np.frombuffer(visit.screenshot, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[1] == 1100 and image.shape[0] > 800  # the whole page, not the viewport
    banner = image[30, 40]
    assert tuple(int(v) for v in banner) == (0x20, 0x00, 0xB0)  # the FAIL verdict, on top


def test_the_checks_see_errors_and_requests(tmp_path):
    control = tmp_path / "control.html"
    control.write_text(
        "<!DOCTYPE html><html><body><img src='http://127.0.0.1:9/x.png'>"
        "<script>console.error('planted'); missingFunction();</script></body></html>"
    )
    with Browser() as browser:
        visit = browser.open_page(control)
    assert visit.requests == ["http://127.0.0.1:9/x.png"]
    assert any("planted" in e for e in visit.errors)
    assert any("missingFunction" in e for e in visit.errors)
