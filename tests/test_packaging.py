"""The wheel installs one top-level package, with the schema, bindings and zoo cards inside it."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile

import pytest
from _paths import ROOT


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    pytest.importorskip("setuptools", reason="building a wheel needs setuptools")
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"pip wheel failed: {done.stderr.strip()[-2000:]}"
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel).namelist()


def test_only_caffe_compat_is_installed(wheel_names):
    tops = {name.split("/")[0] for name in wheel_names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"caffe_compat"}


def test_schema_bindings_cards_and_back_ends_ship(wheel_names):
    for needed in (
        "caffe_compat/proto/caffe.proto",
        "caffe_compat/proto/caffe_pb2.py",
        "caffe_compat/proto/caffe_pb2.pyi",
        "caffe_compat/converters/torch/model.py",
        "caffe_compat/converters/onnx/export.py",
        "caffe_compat/shapes/geometry.py",
        "caffe_compat/reference/run.py",
        "caffe_compat/data/photos/astronaut.jpg",  # synth sets heads on these photos
    ):
        assert needed in wheel_names
    assert any(n.startswith("caffe_compat/zoo/") and n.endswith(".toml") for n in wheel_names)
    assert "caffe_compat/zoo/imagenet_labels.txt" in wheel_names  # label files of the cards


def test_no_module_imports_the_bare_folders():
    """`import converters` would load a second copy of every converter from the checkout."""
    for path in [
        *ROOT.glob("caffe_compat/**/*.py"),
        *ROOT.glob("converters/**/*.py"),
        *ROOT.glob("zoo/**/*.py"),
        *ROOT.glob("tests/**/*.py"),
    ]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert not set(roots) & {"converters", "proto", "zoo"}, f"{path}: {ast.dump(node)}"
