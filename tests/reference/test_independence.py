"""The reference must stay independent of the back ends it judges: its modules import only the
graph, the shape rules, the registry, the errors and the protobuf bindings (plus numpy and the
standard library), and it covers every layer type that has a shape rule."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from caffe_compat import registry

PACKAGE = Path(__file__).resolve().parents[2] / "caffe_compat" / "reference"
ALLOWED = (
    "caffe_compat.ir",
    "caffe_compat.shapes",
    "caffe_compat.registry",
    "caffe_compat.errors",
    "caffe_compat.proto",
    "caffe_compat.reference",
)
THIRD_PARTY = {"numpy"}


def imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (relative imports resolved)."""
    package = ["caffe_compat", "reference"]  # every file is a direct child of the package
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if node.module is None:  # from . import x: each name is a module
                found.update(f"{module}.{alias.name}" for alias in node.names)
            else:
                found.add(module)
    return found


def test_every_module_imports_only_what_is_allowed():
    modules = sorted(PACKAGE.glob("*.py"))
    assert {p.stem for p in modules} >= {"__init__", "run", "conv", "pooling", "lrn", "detection"}
    stdlib = set(sys.stdlib_module_names)
    for path in modules:
        for name in imports(path):
            top = name.split(".")[0]
            if top == "caffe_compat":
                assert name.startswith(ALLOWED), f"{path.name} imports {name}"
            else:
                assert top in stdlib or top in THIRD_PARTY or top == "__future__", (
                    f"{path.name} imports {name}"
                )


def test_the_import_check_sees_relative_and_nested_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from ..converters.torch import model\n"
        "from . import run\n"
        "def f():\n    import torch\n    from ..detection_post import detect\n"
    )
    assert imports(probe) == {
        "caffe_compat.converters.torch",
        "caffe_compat.reference.run",
        "torch",
        "caffe_compat.detection_post",
    }


def test_a_forward_loads_no_back_end(tmp_path):
    code = textwrap.dedent(
        """
        import sys, tempfile, pathlib
        import numpy as np
        from caffe_compat.ir.load import load_net
        from caffe_compat.reference import forward
        text = ('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }'
                'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: AVE kernel_size: 3 } }')
        path = pathlib.Path(tempfile.mkdtemp()) / "net.prototxt"
        path.write_text(text)
        forward(load_net(path), {"data": np.ones((1, 2, 5, 5))})
        bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "onnxruntime", "cv2")
               or m.startswith(("caffe_compat.converters", "caffe_compat.converters.torch.detection_post",
                                "caffe_compat.verify"))]
        print(bad)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert done.stdout.strip() == "[]"


def test_every_type_with_a_shape_rule_has_a_reference():
    shape = registry.supported_types("shape")
    reference = registry.supported_types("reference")
    assert shape <= reference, sorted(shape - reference)
    assert all(registry.lookup(t, "reference").builtin for t in shape)
