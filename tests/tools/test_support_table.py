"""The generated support table: the README's copy is current, and its OpenCV column is backed by
tests that exist and compare each listed type with OpenCV 4."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _paths import ROOT

from caffe_compat import registry
from caffe_compat.ir.load import load_net
from caffe_compat.tools.support_table import builtin_types, render_table

START, END = "<!-- support-table:start -->", "<!-- support-table:end -->"
OPENCV_HARNESS = ("layer_parity", "layer_check", "cv2_caffe", "opencv_exact")


def test_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert START in readme and END in readme, "README.md lost its support-table markers"
    current = readme.split(START, 1)[1].split(END, 1)[0]
    assert current.strip() == render_table().strip(), (
        "README's support table is stale: paste `python -m caffe_compat.tools.support_table` between "
        "the markers"
    )


def test_one_row_per_builtin_type_with_every_column():
    lines = render_table().splitlines()
    rows = [line for line in lines[2:] if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == builtin_types()
    assert all(row.count(" | ") == 6 for row in rows)
    for backend in registry.LAYER_BACKENDS:
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
    assert relu == "| `ReLU` | yes | yes | yes | yes | yes | yes |"


def opencv_tested() -> list[str]:
    return sorted(t for t in builtin_types() if registry.facts(t).opencv_tested)


@pytest.mark.parametrize("layer_type", opencv_tested())
def test_opencv_column_is_backed_by_the_family_test(layer_type):
    family = registry.facts(layer_type).family
    path = ROOT / "tests" / "converters" / f"test_{family}.py"
    assert path.is_file(), f"{layer_type} is in family {family!r} but {path} does not exist"
    text = path.read_text(encoding="utf-8")
    assert f'"{layer_type}"' in text, f"{path.name} does not mention {layer_type}"
    assert any(name in text for name in OPENCV_HARNESS), f"{path.name} does not use OpenCV"


def test_every_type_of_the_zoo_nets_is_declared_opencv_tested():
    # tests/nets/test_zoo_parity.py compares every blob of these nets with OpenCV 4.
    types = set()
    for path in sorted((ROOT / "tests" / "nets" / "data").glob("*.prototxt")):
        types |= {node.type for node in load_net(path).graph.nodes}
    assert types and types <= set(opencv_tested()), sorted(types - set(opencv_tested()))


def test_one_family_name_in_every_folder():
    """A layer's files are found by one name: shapes/, converters/torch, converters/onnx and
    tests/converters use the family of the type's facts."""

    for layer_type in builtin_types():
        entries = {b: registry.builtin_entry(layer_type, b) for b in registry.LAYER_BACKENDS}
        family = registry.facts(layer_type).family
        for backend, entry in entries.items():
            if entry is None or registry.facts(layer_type).alias_of:
                continue
            module = entry.fn.__module__.rsplit(".", 1)[-1]
            assert module == family, f"{layer_type}: {backend} rule in {module}.py, not {family}.py"
        assert (ROOT / "tests" / "converters" / f"test_{family}.py").is_file(), family


def test_module_entry_point_prints_the_table(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "caffe_compat.tools.support_table"],
        cwd=tmp_path,  # not the checkout: the installed package must be the one imported
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout == render_table()
