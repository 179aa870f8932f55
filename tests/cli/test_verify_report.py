"""verify --report: the page written beside the usual output (stdout stays the table or JSON),
exit 1 on the planted net with the first failing blob on the page, the onnx file's identity
listed; a bad report path refused in one line before any verification runs."""

from __future__ import annotations

import json

import pytest
from _planted import FIRST_FAILING, planted_files

from caffe_compat.cli.main import main
from caffe_compat.io.identity import file_identity


@pytest.mark.slow  # the whole command: torch and ONNX Runtime back ends (about 10 s)
def test_report_of_the_planted_net(tmp_path, capsys):
    prototxt, weights, onnx_path, _ = planted_files(tmp_path)
    report = tmp_path / "out" / "report.html"
    args = ["verify", prototxt, weights, "--onnx", onnx_path, "--against", "float64"]
    args += ["--cpu-only", "--batch", "2", "--json", "--report", report]
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 1
    assert json.loads(out)["passed"] is False  # stdout: the JSON alone
    assert f"wrote {report}" in err
    page = report.read_text(encoding="utf-8")
    assert f'id="first-failure" data-blob="{FIRST_FAILING}"' in page
    assert "torch-cpu vs float64</h3>" in page  # torch passes: a plot without a mark
    assert file_identity(onnx_path).sha256 in page
    assert oct(report.stat().st_mode & 0o777) in ("0o644", "0o664", "0o666")


def test_report_path_refused_before_verifying(tmp_path, capsys):
    code = main(["verify", str(tmp_path / "missing.prototxt"), "w", "--report", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and "is a directory" in err and len(err.strip().splitlines()) == 1
