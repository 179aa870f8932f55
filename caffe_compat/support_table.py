"""The README's layer support table, generated from the registry so it cannot drift from the code.

``python -m caffe_compat.support_table`` prints it; tests/test_support_table.py fails when the
README's copy (between ``<!-- support-table:start -->`` and ``<!-- support-table:end -->``)
differs from :func:`render_table`.

Which types are verified against OpenCV 4 is declared in :data:`OPENCV_TESTED`, each with the test
file that does it, rather than guessed from the test sources at render time: a type can appear in
a test's prototxt yet be compared with numpy only (OpenCV lacks it, or reads a setting wrongly),
and an installed package has no tests/ to read. tests/test_support_table.py keeps the declaration
honest: every named file must exist, mention the type and use the OpenCV harness, and every type in
the zoo nets (tests/nets/data/, verified blob by blob against OpenCV) must be listed.
"""

from __future__ import annotations

from . import registry

# Layer type -> the test file comparing it with OpenCV 4's Caffe reader on the same files.
OPENCV_TESTED: dict[str, str] = {
    "AbsVal": "tests/converters/test_elementwise.py",
    "BNLL": "tests/converters/test_elementwise.py",
    "BatchNorm": "tests/converters/test_normalization.py",
    "Concat": "tests/converters/test_levi_layers.py",
    "Convolution": "tests/converters/test_levi_layers.py",
    "ConvolutionDepthwise": "tests/converters/test_conv_variants.py",
    "Crop": "tests/converters/test_reshaping.py",
    "Deconvolution": "tests/converters/test_conv_variants.py",
    "DepthwiseConvolution": "tests/converters/test_conv_variants.py",
    "DetectionOutput": "tests/converters/test_detection.py",
    "Dropout": "tests/converters/test_levi_layers.py",
    "ELU": "tests/converters/test_elementwise.py",
    "Eltwise": "tests/converters/test_arithmetic.py",
    "Exp": "tests/converters/test_elementwise.py",
    "Flatten": "tests/converters/test_levi_layers.py",
    "InnerProduct": "tests/converters/test_levi_layers.py",
    "LRN": "tests/converters/test_levi_layers.py",
    "Log": "tests/converters/test_elementwise.py",
    "MVN": "tests/converters/test_normalization.py",
    "Normalize": "tests/converters/test_detection.py",
    "PReLU": "tests/converters/test_elementwise.py",
    "Permute": "tests/converters/test_detection.py",
    "Pooling": "tests/converters/test_levi_layers.py",
    "Power": "tests/converters/test_elementwise.py",
    "PriorBox": "tests/converters/test_detection.py",
    "ReLU": "tests/converters/test_levi_layers.py",
    "Reshape": "tests/converters/test_reshaping.py",
    "Scale": "tests/converters/test_arithmetic.py",
    "Sigmoid": "tests/converters/test_elementwise.py",
    "Slice": "tests/converters/test_reshaping.py",
    "Softmax": "tests/converters/test_levi_layers.py",
    "Split": "tests/converters/test_levi_layers.py",
    "Swish": "tests/converters/test_elementwise.py",
    "TanH": "tests/converters/test_elementwise.py",
}

HEADER = ("layer type", "shape rule", "PyTorch", "ONNX", "tested against OpenCV 4")
COLUMNS = ("shape", "torch", "onnx")  # the back ends with a column, in HEADER's order
CAVEAT = (
    "\\* Some settings of this layer are refused before any conversion work, in one error that "
    "names each layer and the reason (the converter's `check`)."
)
UNTESTED = "no (numpy reference only)"


def _builtin(layer_type: str, backend: str) -> registry.Entry | None:
    """The project's own entry, ignoring any user registration stacked above it."""
    registry.lookup(layer_type, backend)  # loads the back end's built-ins
    stack = registry._table.get((layer_type, backend), [])
    return next((entry for entry in reversed(stack) if entry.builtin), None)


def _cell(entry: registry.Entry | None) -> str:
    if entry is None:
        return "—"
    if entry.check is None:
        return "yes"
    doc = (entry.check.__doc__ or "").strip().splitlines()
    return f"yes, except {doc[0].rstrip('.')}" if doc else "yes\\*"


def builtin_types() -> list[str]:
    """Every layer type with a built-in registration on some back end, sorted."""
    types = set()
    for backend in registry.BACKENDS:
        types |= {t for t in registry.supported_types(backend) if _builtin(t, backend)}
    return sorted(types)


def render_table() -> str:
    """The Markdown table (and its footnote when a converter has a ``check``)."""
    rows = [HEADER, ("---",) * len(HEADER)]
    for layer_type in builtin_types():
        cells = [_cell(_builtin(layer_type, b)) for b in COLUMNS]
        tested = "yes" if layer_type in OPENCV_TESTED else UNTESTED
        rows.append((f"`{layer_type}`", *cells, tested))
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    if any("\\*" in line for line in lines[2:]):
        lines += ["", CAVEAT]
    return "\n".join(lines) + "\n"


def main() -> None:
    print(render_table(), end="")


if __name__ == "__main__":
    main()
