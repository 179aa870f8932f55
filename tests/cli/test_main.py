"""The entry point: `python -m`, -q/-v before or after the subcommand (standard logging, handler
only for the command), usage errors pointing at the subcommand's --help, library remedies worded
as flags, and inspect's JSON shapes as arrays of ints."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from caffe_compat.cli.main import main
from caffe_compat.errors import CaffeCompatError
from caffe_compat.io import write_caffemodel
from caffe_compat.io.writer import definitions_only
from caffe_compat.ir.load import load_net
from caffe_compat.tools.convert import convert
from caffe_compat.tools.synth import synthesize

NET = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def small(tmp_path):
    prototxt = tmp_path / "small.prototxt"
    prototxt.write_text(NET)
    loaded = load_net(prototxt)
    weights = tmp_path / "small.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=1))
    return prototxt, weights


@pytest.mark.parametrize("module", ["caffe_compat", "caffe_compat.cli"])
def test_python_dash_m_runs_the_cli(module, tmp_path):
    (tmp_path / "empty.prototxt").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-m", module, "inspect", "empty.prototxt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == "caffe-compat: error: empty.prototxt: file is empty (0 bytes)\n"


def test_unknown_option_points_at_the_subcommand_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", "a.prototxt", "b.caffemodel", "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "caffe-compat: error: unrecognized arguments: --bogus (see caffe-compat convert --help)\n"
    )


def _convert_args(small, tmp_path, *extra):
    prototxt, weights = small
    out = tmp_path / "out" / "small"
    return ["convert", str(prototxt), str(weights), "-o", str(out), "--to", "onnx", *extra]


@pytest.mark.parametrize(
    ("flags", "info", "debug"),
    [
        ([], False, False),
        (["-v"], True, False),
        (["-v", "SUB", "-v"], True, True),  # global and subcommand counts add up: -vv
        (["SUB", "-vv"], True, True),
        (["SUB", "-q"], False, False),
    ],
)
def test_verbosity_before_or_after_the_subcommand(small, tmp_path, capsys, flags, info, debug):
    before = flags[: flags.index("SUB")] if "SUB" in flags else flags
    after = flags[flags.index("SUB") + 1 :] if "SUB" in flags else []
    args = _convert_args(small, tmp_path, "--no-check", *after)
    logger = logging.getLogger("caffe_compat")
    level, handlers = logger.level, list(logger.handlers)
    assert main([*before, *args]) == 0
    out, err = capsys.readouterr()
    assert "wrote onnx" in out  # results are never silenced
    assert ("caffe-compat: convert: read took" in err or "[caffe_compat" in err) == info
    assert ("[caffe_compat.tools.convert] convert: read took" in err) == debug
    assert (logger.level, logger.handlers) == (level, handlers)  # the CLI's handler is gone


def test_quiet_drops_warnings_but_not_errors(small, tmp_path, capsys, monkeypatch):
    def warn_then_fail(*args, **kwargs):
        logging.getLogger("caffe_compat.tools.convert").warning("something odd")
        raise CaffeCompatError("it broke")

    monkeypatch.setattr("caffe_compat.cli.convert.convert", warn_then_fail)
    assert main(_convert_args(small, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "caffe-compat: warning: something odd" in err and "error: it broke" in err
    assert main(["-q", *_convert_args(small, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "something odd" not in err and "caffe-compat: error: it broke" in err


def test_library_errors_name_api_options_and_the_cli_words_them_as_flags(small, tmp_path, capsys):
    prototxt, weights = small
    out = tmp_path / "small"
    (tmp_path / "small.onnx").write_bytes(b"precious")
    with pytest.raises(CaffeCompatError) as info:
        convert(prototxt, weights, out_prefix=out, targets=["onnx"])
    assert "force=True" in str(info.value) and "--force" not in str(info.value)
    assert info.value.remedy is not None and info.value.remedy.option == "force"
    args = ["convert", str(prototxt), str(weights), "-o", str(out), "--to", "onnx"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pass --force to overwrite them" in err and "force=True" not in err

    shapeless = tmp_path / "shapeless.prototxt"
    shapeless.write_text(
        'input: "pixels"\nlayer { name: "r" type: "ReLU" bottom: "pixels" top: "r" }\n'
    )
    with pytest.raises(CaffeCompatError) as info:
        load_net(shapeless)
    assert "input_shapes={'pixels': (N, C, H, W)}" in str(info.value)
    assert main(["synth", str(shapeless), "-o", str(tmp_path / "w.caffemodel")]) == 2
    err = capsys.readouterr().err
    assert "pass --input-shape pixels=N,C,H,W to give it one" in err
    assert "input_shapes" not in err


def test_json_errors_carry_the_structured_remedy(small, tmp_path, capsys):
    prototxt, weights = small
    (tmp_path / "small.onnx").write_bytes(b"precious")
    args = ["convert", str(prototxt), str(weights), "-o", str(tmp_path / "small"), "--to", "onnx"]
    assert main([*args, "--json"]) == 2
    record = json.loads(capsys.readouterr().out)
    assert record["remedy"] == {"option": "force", "value": ""}
    assert record["message"].endswith("pass --force to overwrite them")


def test_inspect_json_shapes_are_arrays_of_ints(small, capsys):
    prototxt, weights = small
    assert main(["inspect", str(prototxt), str(weights), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"] == {"data": [1, 3, 12, 12]}
    assert report["outputs"] == {"prob": [1, 5]}
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert layers["conv1"]["outputs"] == [[1, 4, 10, 10]]
    assert layers["conv1"]["params"] == [[4, 3, 3, 3], [4]]
    assert main(["inspect", str(weights), "--json"]) == 0  # weights alone
    alone = {layer["name"]: layer for layer in json.loads(capsys.readouterr().out)["layers"]}
    assert alone["fc"]["params"] == [[5, 400], [5]]
    assert main(["inspect", str(prototxt)]) == 0  # the text keeps 1x4x10x10
    assert "1x4x10x10" in capsys.readouterr().out


def test_help_texts_name_every_judge(capsys):
    """The top-level and verify help name the float64 reference (the only judge on OpenCV 5),
    OpenCV 4 and stored arrays."""
    for argv in (["--help"], ["verify", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        for judge in ("float64 reference", "OpenCV 4", "stored"):
            assert judge in text, (argv, judge)


def test_verbose_convert_keeps_results_and_log_lines_apart(small, tmp_path):
    """stdout and stderr into one file (2>&1): every line is whole, a log line or a result."""
    prototxt, weights = small
    with open(tmp_path / "both.txt", "w") as both:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "caffe_compat",
                "convert",
                "-v",
                str(prototxt),
                str(weights),
                "-o",
                str(tmp_path / "m"),
                "--to",
                "onnx",
            ],
            stdout=both,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
            cwd=tmp_path,  # not the checkout: the installed package must be the one imported
        )
    lines = (tmp_path / "both.txt").read_text().splitlines()
    assert done.returncode == 0, lines
    assert "parity PASS" in lines, lines
    results = ("wrote ", "time ", "check ", "note ", "parity ")
    for line in lines:
        assert line.startswith("caffe-compat: ") != line.startswith(results), line
    assert sum("caffe-compat: " in line for line in lines) == sum(
        line.startswith("caffe-compat: ") for line in lines
    )


def test_a_failed_quick_check_names_the_rows_that_failed():
    """The final outputs may pass while a value before them does not: the summary shows the
    failing rows themselves (what bench_corpus reports as the mismatch)."""
    from caffe_compat.cli.convert import check_lines
    from caffe_compat.verify.compare import ArgmaxAgreement, Comparison, Report

    def row(value: str, error: float, limit: float) -> Comparison:
        return Comparison(value, value, "torch-cpu", "float64", error, 1.0, limit, error <= limit)

    report = Report(inputs="x", batch=2)
    report.comparisons = [row("conv", 0.5, 1e-4), row("mid", 0.2, 1e-4), row("prob", 1e-6, 1e-4)]
    report.comparisons += [row(f"late{i}", 1.0, 1e-4) for i in range(3)]
    report.argmax = [ArgmaxAgreement("prob", "torch-cpu", "float64", 2, 2)]
    lines = check_lines(report)
    assert lines[:2] == [
        "check torch-cpu vs float64: argmax 2/2",
        "check prob torch-cpu vs float64: max abs error 1e-06",
    ]
    assert lines[2] == "check conv torch-cpu vs float64: max abs error 0.5, limit 0.0001  FAIL"
    assert lines[3].startswith("check mid ") and lines[4].startswith("check late0 ")
    assert lines[5] == "check 2 more rows FAIL"
    report.comparisons = [c for c in report.comparisons if c.passed]
    assert not any(line.endswith("FAIL") for line in check_lines(report))


def test_a_full_disk_during_verify_exits_2_with_one_line(small, monkeypatch, capsys):
    import errno

    from caffe_compat.verify import run

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/v/weights.bin")

    monkeypatch.setattr(run, "verify_loaded", full)
    prototxt, weights = small
    assert main(["verify", str(prototxt), str(weights), "--no-opencv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0] and "internal" not in err[0]
