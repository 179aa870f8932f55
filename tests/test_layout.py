"""The package's layering, checked over the source's own imports: no import cycle anywhere, the
core never imports the application or the CLI, and the readers import no framework."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from _paths import ROOT

FOLDERS = {
    "caffe_compat": ROOT / "caffe_compat",
    "caffe_compat.converters": ROOT / "converters",
    "caffe_compat.proto": ROOT / "proto",
    "caffe_compat.zoo": ROOT / "zoo",
}
CORE = ("io", "ir", "shapes", "passes", "reference", "converters", "verify")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports_of(name: str, *, top_level_only: bool = False) -> set[str]:
    """Absolute names of everything ``name`` imports (module-level only when asked)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    base = name.split(".") if _is_package(name) else name.split(".")[:-1]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - node.level + 1]
                target = ".".join(parent + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def _internal(names: set[str]) -> set[str]:
    return {n for n in names if n in MODULES}


def test_no_import_cycle_between_modules():
    """Imports form a DAG, function-level (lazy) imports included."""
    graph = {m: _internal(imports_of(m)) - {m} for m in MODULES}
    # A package's __init__ importing its own submodules is not a cycle with them.
    for m in graph:
        graph[m] = {t for t in graph[m] if not (_is_package(m) and t.startswith(m + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t) :], t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("package", CORE)
def test_core_imports_neither_app_nor_cli(package):
    for name in MODULES:
        if name == f"caffe_compat.{package}" or name.startswith(f"caffe_compat.{package}."):
            bad = {
                n
                for n in imports_of(name)
                if n.startswith(("caffe_compat.app", "caffe_compat.cli", "caffe_compat.tools"))
            }
            assert not bad, f"{name} imports {sorted(bad)}"


def test_io_imports_no_framework():
    for name in MODULES:
        if name.startswith("caffe_compat.io"):
            heavy = {n.split(".")[0] for n in imports_of(name)} & {"torch", "onnx", "cv2"}
            assert not heavy, f"{name} imports {sorted(heavy)}"


def test_zoo_imports_no_application_module():
    bad = {n for n in imports_of("caffe_compat.zoo") if n.startswith("caffe_compat.app")}
    assert not bad


def test_preprocessing_modes_named_by_cards_are_the_implemented_ones():
    from caffe_compat.app.preprocess import MODES
    from caffe_compat.zoo import PREPROCESSING_MODES

    assert tuple(MODES) == PREPROCESSING_MODES


def test_predict_is_a_plain_function_of_the_package():
    import inspect

    import caffe_compat

    assert inspect.isfunction(caffe_compat.predict)
