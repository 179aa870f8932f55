"""The generated support table: the README's copy is current, and its OpenCV column is backed by
tests that exist and compare each listed type with OpenCV 4."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from caffe_compat import registry
from caffe_compat.load import load_net
from caffe_compat.support_table import OPENCV_TESTED, builtin_types, render_table

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- support-table:start -->", "<!-- support-table:end -->"
OPENCV_HARNESS = ("layer_parity", "layer_check", "cv2_caffe", "opencv_exact")


def test_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if START not in readme or END not in readme:
        pytest.skip("README.md has no support-table markers yet")
    current = readme.split(START, 1)[1].split(END, 1)[0]
    assert current.strip() == render_table().strip(), (
        "README's support table is stale: paste `python -m caffe_compat.support_table` between "
        "the markers"
    )


def test_one_row_per_builtin_type_with_every_column():
    lines = render_table().splitlines()
    rows = [line for line in lines[2:] if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == builtin_types()
    assert all(row.count(" | ") == 4 for row in rows)
    for backend in registry.BACKENDS:
        assert set(builtin_types()) >= registry.supported_types(backend)


def test_user_registrations_do_not_enter_the_table():
    registry.register("ZzFork", "shape")(lambda node, inputs: registry.LayerShapes(inputs, []))
    try:
        assert "ZzFork" not in render_table()
    finally:
        registry.unregister("ZzFork", "shape")


def test_check_caveat_is_noted_where_a_converter_refuses_settings():
    table = render_table()
    pooling = next(line for line in table.splitlines() if line.startswith("| `Pooling`"))
    assert "yes\\*" in pooling or "yes, except" in pooling  # STOCHASTIC pooling is refused
    relu = next(line for line in table.splitlines() if line.startswith("| `ReLU`"))
    assert relu == "| `ReLU` | yes | yes | yes | yes |"


@pytest.mark.parametrize("layer_type", sorted(OPENCV_TESTED))
def test_opencv_column_names_a_test_that_compares_the_type_with_opencv(layer_type):
    assert layer_type in builtin_types()
    path = ROOT / OPENCV_TESTED[layer_type]
    assert path.is_file(), f"{path} is gone"
    text = path.read_text(encoding="utf-8")
    assert f'"{layer_type}"' in text, f"{path.name} no longer mentions {layer_type}"
    assert any(name in text for name in OPENCV_HARNESS), f"{path.name} does not use OpenCV"


def test_every_type_of_the_zoo_nets_is_listed_as_opencv_tested():
    # tests/nets/test_zoo_parity.py compares every blob of these nets with OpenCV 4.
    types = set()
    for path in sorted((ROOT / "tests" / "nets" / "data").glob("*.prototxt")):
        types |= {node.type for node in load_net(path).graph.nodes}
    assert types and types <= set(OPENCV_TESTED), sorted(types - set(OPENCV_TESTED))


def test_module_entry_point_prints_the_table():
    done = subprocess.run(
        [sys.executable, "-m", "caffe_compat.support_table"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout == render_table()
