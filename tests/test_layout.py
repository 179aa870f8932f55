"""The package's layering, checked over the source's own imports: no import cycle anywhere, the
core never imports the application or the CLI, and the readers import no framework; the tests
mirror the package, and the docs name modules that exist."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from _paths import ROOT

FOLDERS = {
    "caffe_compat": ROOT / "caffe_compat",
    "caffe_compat.converters": ROOT / "converters",
    "caffe_compat.proto": ROOT / "proto",
    "caffe_compat.zoo": ROOT / "zoo",
}
CORE = ("io", "ir", "shapes", "passes", "reference", "converters", "verify", "cache", "dnn")
# Everything that caches: each goes through caffe_compat.cache and keeps no cache logic of its own.
CACHE_USERS = ("caffe_compat.dnn.cache", "caffe_compat.app.pretrained", "caffe_compat.app.pull")


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


def _in_cache_package(name: str) -> bool:
    return name == "caffe_compat.cache" or name.startswith("caffe_compat.cache.")


def test_one_cache():
    """Only caffe_compat.cache reads $CAFFE_COMPAT_HOME; the modules that cache use it and
    neither hash, sign nor archive entries themselves."""
    for name, path in MODULES.items():
        if _in_cache_package(name):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
        assert "CAFFE_COMPAT_HOME" not in strings, f"{name} reads the cache home itself"
    for user in CACHE_USERS:
        imported = imports_of(user)
        assert any(_in_cache_package(n) for n in imported), user
        own = {n.split(".")[0] for n in imported} & {"hashlib", "hmac", "zipfile", "glob"}
        assert not own, f"{user} imports {sorted(own)}: cache logic outside caffe_compat.cache"


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


# --- tests mirror the package -----------------------------------------------------------------

# Modules whose tests live under another name, and where. Everything else has a
# tests/**/test_<module>.py (or test_<module>_<aspect>.py); private modules (_name.py) are tested
# through the public module that uses them.
TESTED_ELSEWHERE = {
    "caffe_compat/app/adience.py": "the fold files, with the evaluation: tests/app/test_evaluate.py",
    "caffe_compat/app/runners.py": "through the Predictor: tests/app/test_predictor.py",
    "caffe_compat/cli/verify.py": "the command: tests/cli/test_main.py, tests/test_budget.py, tests/opencv4/",
    "caffe_compat/cli/zoo.py": "with pull, against a local server: tests/app/test_pull.py",
    "caffe_compat/dnn/cache.py": "the conversion cache, through readNet: tests/dnn/test_read.py",
    "caffe_compat/dnn/model.py": "the converted model, through readNet: tests/dnn/test_read.py",
    "caffe_compat/dnn/names.py": "OpenCV's layer names, through readNet: tests/dnn/test_read.py",
    "caffe_compat/io/blobs.py": "tests/io/test_caffemodel.py, tests/io/test_bad_input.py",
    "caffe_compat/io/identity.py": "file identities: tests/app/test_download.py, test_pretrained.py",
    "caffe_compat/io/messages.py": "tests/io/test_caffemodel.py (protobuf's parser against ours)",
    "caffe_compat/io/source.py": "reading files safely: tests/io/test_bad_input.py",
    "caffe_compat/io/weights.py": "tests/io/test_caffemodel.py, tests/io/test_hdf5.py",
    "caffe_compat/io/wire.py": "the wire walker: tests/io/test_caffemodel.py, tests/fuzz/",
    "caffe_compat/io/writer.py": "round trips: tests/io/test_caffemodel.py, tests/io/test_hdf5.py",
    "caffe_compat/ir/graph.py": "the graph load_net builds: tests/ir/test_build.py, tests/passes/",
    "caffe_compat/ir/infer.py": "shape inference and weights: tests/ir/test_build.py, test_validate.py",
    "caffe_compat/ir/load.py": "load_net, in nearly every test; tests/ir/test_build.py",
    "caffe_compat/pycaffe/detector.py": "tests/pycaffe/test_classifier_detector.py",
    "caffe_compat/verify/backends.py": "tests/passes/test_fold_batchnorm.py, tests/test_custom_layers.py",
    "caffe_compat/verify/float64.py": "the float64 judge: tests/passes/test_pipeline.py, tests/verify/",
    "caffe_compat/verify/inputs.py": "synthetic feeds: tests/ir/test_validate.py, tests/tools/",
    "caffe_compat/verify/opencv.py": "the OpenCV 4 judge: tests/opencv4/, tests/passes/test_pipeline.py",
    "converters/onnx/export.py": "every tests/converters/test_<family>.py (layer_check exports)",
    "converters/onnx/runtime.py": "every tests/converters/test_<family>.py (ONNX Runtime sessions)",
    "converters/torch/detection_post.py": "DetectionOutput: tests/converters/test_detection.py",
    "converters/torch/model.py": "every tests/converters/test_<family>.py (CaffeNet)",
    "converters/torch/numerics.py": "tests/app/test_precision.py, tests/converters/test_conv.py",
    "proto/generate.py": "its --check: tests/proto/test_caffe_pb2.py",
}


def _public_modules() -> list[str]:
    found = []
    for folder in FOLDERS.values():
        for path in folder.rglob("*.py"):
            if not path.stem.startswith("_"):
                found.append(path.relative_to(ROOT).as_posix())
    return sorted(found)


def _mirror(module: str) -> str:
    """The tests folder that mirrors a module's package (tests/ for a top-level module)."""
    parts = module.split("/")
    if parts[0] == "caffe_compat":
        return "/".join(["tests", *parts[1:-1]])
    return f"tests/{parts[0]}"


def test_every_module_has_a_test_file_of_its_name():
    """tests/**/test_<module>.py, or test_<module>_<aspect>.py beside the package's other tests."""
    tests = [p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")]
    untested = []
    for module in _public_modules():
        stem = module.rsplit("/", 1)[-1][:-3]
        named = any(
            t.endswith(f"/test_{stem}.py") or t.startswith(f"{_mirror(module)}/test_{stem}_")
            for t in tests
        )
        mirrored = f"{_mirror(module)}/test_{stem}.py" in tests  # not another package's
        if named:
            assert not mirrored or module not in TESTED_ELSEWHERE, (
                f"{module} has its own test file now: unlist it"
            )
        elif module not in TESTED_ELSEWHERE:
            untested.append(module)
    assert not untested, f"modules with no tests/**/test_<name>.py: {untested}"
    assert set(TESTED_ELSEWHERE) <= set(_public_modules())


def test_no_test_file_at_the_root_but_for_top_level_modules():
    top = {p.stem for p in (ROOT / "caffe_compat").glob("*.py")} | {"layout", "packaging"}
    top |= {"custom_layers"}  # the plugin point: registry.py, as docs/custom_layers.md shows
    stray = [p.name for p in (ROOT / "tests").glob("test_*.py") if p.stem[5:] not in top]
    assert not stray, f"test files at tests/ that belong in a folder mirroring the package: {stray}"


# --- documentation names what exists ----------------------------------------------------------

DOTTED = re.compile(r"\bcaffe_compat(?:\.[A-Za-z_]\w*)+")
NOT_MODULE_PATHS = {"caffe_compat.json"}  # a file name (the .pt2 archive's provenance entry)


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_module_paths_named_in_the_code_and_docs_exist():
    texts = [*MODULES.values(), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    stale = {}
    for path in texts:
        for dotted in set(DOTTED.findall(path.read_text(encoding="utf-8"))) - NOT_MODULE_PATHS:
            if not _resolves(dotted.rstrip(".")):
                stale.setdefault(dotted, []).append(path.relative_to(ROOT).as_posix())
    assert not stale, f"names of modules or objects that do not exist: {stale}"


def test_the_readme_layout_table_lists_every_package_folder_and_top_level_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Repository layout", 1)[1].split("\n\n", 2)[2].split("\n\n", 1)[0]
    for folder in sorted((ROOT / "caffe_compat").iterdir()):
        if folder.is_dir() and (folder / "__init__.py").is_file():
            assert f"`caffe_compat/{folder.name}/`" in table, f"caffe_compat/{folder.name}/"
    for module in sorted((ROOT / "caffe_compat").glob("*.py")):
        assert f"`{module.name}`" in table or f"`caffe_compat/{module.name}`" in table, module.name
    for folder in ("converters/torch/", "converters/onnx/", "proto/", "zoo/", "tests/"):
        assert f"`{folder}`" in table, folder


# --------------------------------------------------------------------------------------------
# Orchestrators short enough to hold in one's head (verify, convert, the Ray driver, the
# application's commands): plan -> run -> report steps, no function over 60 lines

ORCHESTRATION = [
    "verify/run.py",
    "tools/convert.py",
    "app/scale.py",
    "app/scale_session.py",
    "app/scale_stages.py",
    "app/scale_output.py",
    "app/settings.py",
    "app/predictor.py",
    "app/evaluate.py",
    "cli/predict.py",
    "cli/_scale.py",
    "cli/_models.py",
    "cli/evaluate.py",
    "cli/verify.py",
]
MAX_LINES = 60


@pytest.mark.parametrize("module", ORCHESTRATION)
def test_no_function_over_sixty_lines(module):
    tree = ast.parse((ROOT / "caffe_compat" / module).read_text(encoding="utf-8"))
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]
    assert not long, f"{module}: {', '.join(long)}; split them into plan / run / report steps"


def test_the_length_check_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    tree = ast.parse(f"def f():\n{body}\n")
    (node,) = tree.body
    assert node.end_lineno - node.lineno + 1 == MAX_LINES + 1
