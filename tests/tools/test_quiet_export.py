"""convert keeps to itself: ONNX alone never imports torch, and silencing torch.export touches
neither other threads' logging nor their stderr, and is undone afterwards."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from _paths import TESTS

from caffe_compat.io import write_caffemodel
from caffe_compat.io.writer import definitions_only
from caffe_compat.ir.load import load_net
from caffe_compat.tools import quiet_export
from caffe_compat.tools.convert import convert
from caffe_compat.tools.synth import synthesize

NET = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
SSD = TESTS / "converters" / "data" / "ssd_res10_300x300.prototxt"


def _files(folder: Path, prototxt: Path | None = None) -> tuple[Path, Path]:
    if prototxt is None:
        prototxt = folder / "small.prototxt"
        prototxt.write_text(NET)
    loaded = load_net(prototxt)
    weights = folder / f"{prototxt.stem}.caffemodel"
    blobs = synthesize(loaded, seed=1, method="he")
    write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
    return prototxt, weights


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_background_threads_records_all_appear_during_convert(tmp_path):
    """logging.disable() used to drop them for the whole process (40 of 73 appeared)."""
    prototxt, weights = _files(tmp_path)
    logger = logging.getLogger("app.worker")
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stop, sent = threading.Event(), []

    def work() -> None:
        while not stop.is_set():
            sent.append(len(sent))
            logger.info("record %d", sent[-1])
            stop.wait(0.002)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        result = convert(prototxt, weights, out_prefix=tmp_path / "small", check=False)
    finally:
        stop.set()
        worker.join()
        logger.removeHandler(handler)
    assert result.outputs["torch"].suffix == ".pt2"  # torch.export ran, inside the quiet scope
    assert len(sent) >= 3  # records kept coming while convert ran (timing varies with load)
    assert [r.getMessage() for r in handler.records] == [f"record {i}" for i in sent]


def test_torch_export_noise_is_caught_for_this_thread_only_and_undone(tmp_path, capfd, caplog):
    """The SSD net's NMS cannot be exported: torch prints a partial graph on stderr and logs a
    warning; neither reaches the terminal, both reach our DEBUG log, nothing stays patched."""
    prototxt, weights = _files(tmp_path, SSD)
    stderr_before = sys.stderr
    caplog.set_level(logging.DEBUG, logger="caffe_compat.tools.quiet_export")
    result = convert(prototxt, weights, out_prefix=tmp_path / "ssd", targets=["torch"], check=False)
    assert result.outputs["torch"].suffix == ".safetensors"  # the fallback: export failed
    assert "def forward" not in capfd.readouterr().err
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert "torch.export printed" in debug and "def forward" in debug
    assert sys.stderr is stderr_before
    leftovers = [
        logger.name
        for logger in quiet_export._torch_export_loggers()
        if any(isinstance(f, quiet_export._ThisThreadOnly) for f in logger.filters)
    ]
    assert leftovers == []


def test_another_threads_stderr_passes_through_the_quiet_scope(capfd):
    seen = threading.Event()

    def other() -> None:
        print("from another thread", file=sys.stderr, flush=True)
        seen.set()

    with quiet_export.quiet_torch_export():
        print("from this thread", file=sys.stderr)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    err = capfd.readouterr().err
    assert seen.is_set() and "from another thread" in err and "from this thread" not in err


SCRIPT = textwrap.dedent(
    """
    import sys
    import caffe_compat.verify.opencv as opencv
    if sys.argv[1] == "no-opencv":
        opencv.opencv_caffe_available = lambda: "OpenCV 5 (simulated)"
    from caffe_compat.cli.main import main
    code = main(sys.argv[2:])
    print("TORCH-IMPORTED" if "torch" in sys.modules else "TORCH-FREE")
    sys.exit(code)
    """
)


@pytest.mark.parametrize(
    ("case", "extra", "expect"),
    [
        ("any-opencv", [], "check onnxruntime-cpu vs float64: argmax 4/4"),
        ("any-opencv", ["--no-check"], "wrote onnx"),
        ("no-opencv", [], "check onnxruntime-cpu vs float64: argmax 4/4"),
    ],
)
def test_onnx_only_never_imports_torch(tmp_path, case, extra, expect):
    """The float64 judge needs no torch, so the check runs wherever ONNX alone is asked for."""
    prototxt, weights = _files(tmp_path)
    args = ["convert", str(prototxt), str(weights), "-o", str(tmp_path / "out"), "--to", "onnx"]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, case, *args, *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert expect in done.stdout
    assert done.stdout.strip().endswith("TORCH-FREE"), done.stdout
    assert (tmp_path / "out.onnx").is_file()
