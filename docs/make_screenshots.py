"""The README's pictures of the verify report: GoogLeNet from the zoo (synthesized weights), and
GoogLeNet again with an error planted in one layer of its exported ONNX model (one filter of
inception_4c/3x3 scaled by 5 %). Each report page is rendered by headless Chromium; the top of
the page (verdict and plots), and for the planted net the drawing around the first failing layer,
are saved as small PNGs in docs/.

    python docs/make_screenshots.py [WORK_FOLDER]

Needs chromium, OpenCV 4 (the second judge) and a few minutes on two cores.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _browser import Browser  # noqa: E402
from _planted import plant  # noqa: E402

NET = ROOT / "zoo" / "bvlc_googlenet.prototxt"
PLANTED_LAYER = "inception_4c/3x3"
WIDTH = 1100
SCROLL_TO_MARK = """(() => {
    const g = document.querySelector('svg.net-drawing g.marked') ||
              document.querySelector('svg.net-drawing g.layer');
    const box = document.querySelector('.drawing');
    box.scrollIntoView();
    const r = g.getBoundingClientRect(), b = box.getBoundingClientRect();
    box.scrollTop += r.top - b.top - 250;
    box.scrollLeft += r.left - b.left - 350;
    return g.dataset.name;
})()"""


def cli(*args: object) -> int:
    command = [sys.executable, "-m", "caffe_compat", *map(str, args)]
    print("$", " ".join(command[2:]), flush=True)
    return subprocess.run(command, check=False).returncode


def small_png(data: bytes, path: Path, height: int | None = None) -> None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if height is not None:
        image = image[:height]
    image = cv2.resize(image, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


def planted_onnx(weights: Path, target: Path) -> None:
    """GoogLeNet's ONNX model with every blob an output, one layer planted wrong."""
    from caffe_compat.converters.onnx.export import to_onnx
    from caffe_compat.ir.load import load_net

    loaded = load_net(NET, weights)
    values = [v for v in loaded.graph.values if v not in loaded.graph.inputs]
    target.write_bytes(
        plant(to_onnx(loaded.graph, extra_outputs=values), PLANTED_LAYER).SerializeToString()
    )


def shoot(page: Path, name: str, drawing: bool = False) -> None:
    """The top of the page; with ``drawing``, the drawing around the first failing layer."""
    with Browser() as browser:
        top = browser.open_page(page, width=WIDTH, height=1000)
        assert not top.errors and not top.requests, (top.errors, top.requests)
        small_png(top.screenshot, ROOT / "docs" / f"{name}_report.png")
        if drawing:
            part = browser.open_page(page, width=WIDTH, height=700, evaluate={"at": SCROLL_TO_MARK})
            small_png(part.screenshot, ROOT / "docs" / f"{name}_drawing.png")


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="shots-"))
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "googlenet.caffemodel"
    if not weights.exists():
        cli("synth", NET, "-o", weights)
    common = ["--batch", "2", "--cpu-only"]
    cli("verify", NET, weights, *common, "--report", work / "googlenet.html", "--failures-only")
    shoot(work / "googlenet.html", "googlenet")
    onnx_path = work / "googlenet_planted.onnx"
    planted_onnx(weights, onnx_path)
    cli(
        "verify",
        NET,
        weights,
        "--onnx",
        onnx_path,
        *common,
        "--report",
        work / "planted.html",
        "--failures-only",
    )
    shoot(work / "planted.html", "googlenet_planted", drawing=True)


if __name__ == "__main__":
    main()
