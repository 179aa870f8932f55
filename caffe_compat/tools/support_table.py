"""The README's layer support table, generated from the registry so it cannot drift from the code.

``python -m caffe_compat.tools.support_table`` prints it; tests/tools/test_support_table.py fails
when the README's copy (between ``<!-- support-table:start -->`` and
``<!-- support-table:end -->``) differs from :func:`render_table`.

Which types are verified against OpenCV 4 is each type's ``opencv_tested`` fact (declared beside
its shape rule) rather than guessed from the test sources at render time: a type can appear in a
test's prototxt yet be compared with numpy only (OpenCV lacks it, or reads a setting wrongly), and
an installed package has no tests/ to read. tests/tools/test_support_table.py keeps the declaration
honest: the family's test file (tests/converters/test_<family>.py) must mention the type and use
the OpenCV harness, and every type in the zoo nets (verified blob by blob against OpenCV) must be
declared. A type from a Caffe fork names its origin beside its name (its ``origin`` fact).
"""

from __future__ import annotations

from .. import registry

HEADER = (
    "layer type",
    "shape rule",
    "PyTorch",
    "ONNX",
    "float64 reference",
    "float64 backward",
    "tested against OpenCV 4",
)
CAVEAT = (
    "\\* Some settings of this layer are refused before any conversion work, in one error that "
    "names each layer and the reason (the converter's `check`)."
)
UNTESTED = "no (float64 reference and numpy formulas)"


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
    for backend in registry.LAYER_BACKENDS:
        types |= {
            t for t in registry.supported_types(backend) if registry.builtin_entry(t, backend)
        }
    return sorted(types)


def _missing(layer_type: str, backend: str) -> str:
    """Why a type has no entry on a back end, where its facts say."""
    facts = registry.facts(layer_type)
    if backend == "reference_backward" and facts.no_backward is not None:
        return "none in Caffe"
    if backend == "onnx" and facts.role == "training":
        return "not needed (training only)"
    return "—"


def render_table() -> str:
    """The Markdown table (and its footnote when a converter has a ``check``)."""
    rows = [HEADER, ("---",) * len(HEADER)]
    for layer_type in builtin_types():
        cells = [
            _cell(entry) if entry is not None else _missing(layer_type, backend)
            for backend in registry.LAYER_BACKENDS
            for entry in [registry.builtin_entry(layer_type, backend)]
        ]
        tested = "yes" if registry.facts(layer_type).opencv_tested else UNTESTED
        origin = registry.facts(layer_type).origin
        name = f"`{layer_type}` ({origin})" if origin else f"`{layer_type}`"
        rows.append((name, *cells, tested))
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    if any("\\*" in line for line in lines[2:]):
        lines += ["", CAVEAT]
    return "\n".join(lines) + "\n"


def main() -> None:
    print(render_table(), end="")


if __name__ == "__main__":
    main()
