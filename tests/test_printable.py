"""Names from files reach the terminal escaped: in every error line and in everything a command
prints on stdout (inspect and verify tables, result lines), whatever the name holds."""

from __future__ import annotations

import json

import pytest

from caffe_compat.cli.main import main
from caffe_compat.errors import (
    CaffeCompatError,
    NetDefinitionError,
    UnsupportedLayer,
    UnsupportedLayersError,
)
from caffe_compat.printable import printable, printable_lines

CLEAR_AND_LIE = "\x1b[2J\x1b[H\x1b[32mparity PASS\x1b[0m"

NET = r"""
name: "evil\033]0;pwned\007"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv\033[2J\033[H\033[32mparity PASS\033[0m" type: "Convolution" bottom: "data" top: "c\r\n1"
        convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "relu\u202e" type: "ReLU" bottom: "c\r\n1" top: "c\r\n1" }
"""


def test_printable_escapes_controls_bidi_and_separators():
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("x\ny\tz\x7f\x9b") == "x\\x0ay\\x09z\\x7f\\x9b"
    assert printable("abc\u202eexe.jpg\u2028\ufeff") == "abc\\u202eexe.jpg\\u2028\\ufeff"
    assert printable("caf\u00e9 \u4e2d\u6587 \U0001f600") == "caf\u00e9 \u4e2d\u6587 \U0001f600"
    assert printable("bad\udcff.jpg") == "bad\\udcff.jpg"  # undecodable file-name byte
    assert printable_lines("a\tb\nc\x1bd\r") == "a\tb\nc\\x1bd\\x0d"
    assert printable(printable(CLEAR_AND_LIE)) == printable(CLEAR_AND_LIE)  # idempotent


def test_errors_show_names_escaped():
    error = NetDefinitionError(
        "bad top",
        path="/tmp/n\x1b[1m.prototxt",
        layer=CLEAR_AND_LIE,
        layer_type="Conv\x07",
        blob="b\n0",
    )
    text = str(error)
    assert "\x1b" not in text and "\x07" not in text and "\n" not in text
    assert '/tmp/n\\x1b[1m.prototxt: layer "\\x1b[2J\\x1b[H\\x1b[32mparity PASS\\x1b[0m"' in text
    assert "(Conv\\x07)" in text and "blob b\\x0a0" in text
    assert error.to_dict()["layer"] == CLEAR_AND_LIE  # JSON carries the real name (and escapes it)
    assert "\x1b" not in json.dumps(error.to_dict())
    reason = CaffeCompatError(f'layer "{CLEAR_AND_LIE}" not found')  # names inside a reason too
    assert "\x1b" not in str(reason) and "\\x1b[2J" in str(reason)
    missing = UnsupportedLayersError([UnsupportedLayer("x\x1b[2J", "Weird\x1b[0m", "onnx")])
    assert "\x1b" not in str(missing)


def test_inspect_prints_names_escaped(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out and "\x07" not in out
    assert "conv\\x1b[2J\\x1b[H\\x1b[32mparity PASS\\x1b[0m" in out
    assert "relu\\u202e" in out and "c\\x0d\\x0a1 -> c\\x0d\\x0a1" in out  # one row per layer
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # the real names, JSON-escaped
    assert report["layers"][0]["name"] == "conv" + CLEAR_AND_LIE


def test_error_lines_print_names_escaped(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(NET.replace('bottom: "data"', 'bottom: "nowhere\\033[5m\\n"', 1))
    assert main(["convert", str(path), str(tmp_path / "w.caffemodel")]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert "\x1b" not in line and "nowhere\\x1b[5m " in line  # whitespace folded: one line
    assert 'layer "conv\\x1b[2J\\x1b[H' in line


def test_stdout_is_restored_after_a_command(tmp_path, capsys):
    import sys

    before = sys.stdout
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    main(["inspect", str(path)])
    assert sys.stdout is before


def test_verify_table_names_are_escaped(tmp_path, capsys):
    pytest.importorskip("cv2")
    from caffe_compat.io.writer import definitions_only, write_caffemodel
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize

    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    loaded = load_net(path)
    weights = tmp_path / "w.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=0))
    code = main(["verify", str(path), str(weights), "--batch", "2", "--cpu-only"])
    out = capsys.readouterr().out
    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out and "\r" not in out
    rows = [line for line in out.splitlines() if line.startswith("c\\x0d\\x0a1 ")]
    judges = 2 if "readNetFromCaffe" in out else 1  # float64, and OpenCV 4 where installed
    assert len(rows) == 2 * judges  # torch and onnxruntime per judge: no name forges lines


FORGED = "net\nPASS: every blob matches\x1b[32m"


@pytest.mark.parametrize("level", ["warning", "info", "debug"])
def test_log_lines_show_names_escaped(capsys, level):
    import logging

    from caffe_compat.cli.main import _messages

    with _messages(quiet=False, verbose=2):
        getattr(logging.getLogger("caffe_compat.test"), level)("layer %s is odd", FORGED)
    err = capsys.readouterr().err
    assert "\x1b" not in err
    if level != "debug":  # debug detail may keep line breaks; its controls are escaped
        assert err.count("\n") == 1 and "net\\x0aPASS" in err


def test_progress_labels_are_escaped():
    import io

    from caffe_compat.progress import Progress

    bar = Progress(3, label=f"verify {FORGED}", stream=io.StringIO())
    bar.describe("layer \u202eevil")
    text = bar.text()
    assert "\x1b" not in text and "\n" not in text and "\u202e" not in text
    assert "net\\x0aPASS" in text


def test_library_warnings_in_commands_are_one_escaped_line(tmp_path, capsys):
    """A V0 net whose layer carries fields Caffe ignores: the upgrade's warning quotes the layer
    name, and the command shows it as one escaped line (not Python's raw warning display)."""
    path = tmp_path / "v0.prototxt"
    path.write_text(
        'input: "x" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4\n'
        'layers { layer { name: "r\\033[2J\\nPASS" type: "relu" num_output: 3 } '
        'bottom: "x" top: "r" }\n'
    )
    assert main(["inspect", str(path)]) == 0
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "V0 field(s)" in line]
    assert "\x1b" not in err and line.startswith("caffe-compat: warning: ")
    assert 'layer "r\\x1b[2J\\x0aPASS" (relu): V0 field(s) num_output' in line
