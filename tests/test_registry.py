"""The layer registry: user overrides stack on built-ins, preflight lists every gap at once, and
the layer contract holds (a family's files exist, no other module lists layer types)."""

from __future__ import annotations

import ast

import pytest
from _paths import ROOT

from caffe_compat import registry
from caffe_compat.errors import UnsupportedLayersError
from caffe_compat.ir.graph import Graph, Node
from caffe_compat.proto import caffe_pb2


def node(name: str, kind: str) -> Node:
    return Node(name, kind, caffe_pb2.LayerParameter(name=name, type=kind), [], [])


def test_user_registration_overrides_then_unregister_restores():
    builtin = registry.lookup("ReLU", "shape")
    assert builtin is not None and builtin.builtin

    @registry.register("ReLU", "shape")
    def mine(node, inputs):
        return registry.LayerShapes(inputs, [])

    try:
        assert registry.lookup("ReLU", "shape").fn is mine
    finally:
        registry.unregister("ReLU", "shape")
    assert registry.lookup("ReLU", "shape") is builtin


def test_unknown_backend_and_empty_unregister():
    with pytest.raises(ValueError, match="unknown back end"):
        registry.register("X", "tensorflow")
    with pytest.raises(KeyError):
        registry.unregister("NoSuchType", "shape")


def test_preflight_lists_every_unsupported_layer_in_one_error():
    graph = Graph(
        "g",
        {},
        [node("a1", "Frobnicate"), node("ok", "ReLU"), node("a2", "Frobnicate"), node("b", "Zap")],
        [],
    )
    with pytest.raises(UnsupportedLayersError) as caught:
        registry.preflight(graph, ["shape", "onnx"])
    message = str(caught.value)
    assert "Frobnicate [shape]: a1, a2" in message and "Zap [onnx]: b" in message
    assert len(caught.value.missing) == 6  # 3 layers x 2 back ends
    assert "\n" not in message


def test_check_reports_an_unsupported_setting():
    pool = node("p", "Pooling")
    pool.param.pooling_param.pool = caffe_pb2.PoolingParameter.STOCHASTIC
    missing = registry.missing_support([pool], ["torch", "onnx"])
    assert [m.backend for m in missing] == ["torch", "onnx"]
    assert all("STOCHASTIC" in m.detail or "deterministic" in m.detail for m in missing)


# --- the layer contract: a family's files, and nothing else lists layer types ------------------

# Every file a built-in layer family ``fam`` has (docs/custom_layers.md and registry.py list them).
FAMILY_FILES = (
    "caffe_compat/shapes/{fam}.py",
    "converters/torch/{fam}.py",
    "converters/onnx/{fam}.py",
    "caffe_compat/reference/{fam}.py",
    "tests/converters/test_{fam}.py",
    "tests/reference/test_{fam}.py",
)
# Where else a new type may have to be written, named in the same two places.
OTHER_PLACES = ("proto/caffe.proto", "python -m caffe_compat.tools.support_table")
# Folders whose modules are named after a family (the family's facts, rules and functions).
FAMILY_FOLDERS = (
    "caffe_compat/shapes",
    "converters/torch",
    "converters/onnx",
    "caffe_compat/reference",
)
# Modules outside the family files that name layer types, and why they must.
NAMES_TYPES = {
    "caffe_compat/io/upgrade.py": "Caffe's V1 enum and legacy data fields: the old file format",
    "caffe_compat/passes/fold_batchnorm.py": "the layer type the pass is named after",
    "caffe_compat/pycaffe/_data.py": "pycaffe's set_input_arrays checks the first layer's type",
    "caffe_compat/pycaffe/_layout.py": "Caffe's InsertSplits writes Split layers into the net",
    "caffe_compat/pycaffe/_caffe.py": "caffe.Layer, the base of Python layers, is of type Python",
    "caffe_compat/pycaffe/coord_map.py": "BVLC's public PASS_THROUGH_LAYERS and crop rules",
    "caffe_compat/pycaffe/draw.py": "BVLC's draw.py API: its labels and colours by type name",
    "caffe_compat/verify/opencv.py": "writes an Input layer into the deploy net OpenCV reads",
    "converters/torch/detection_post.py": "DetectionOutput's own PyTorch implementation",
}


def _families() -> set[str]:
    from caffe_compat.tools.support_table import builtin_types

    return {registry.facts(t).family for t in builtin_types()}


def _training_only(fam: str) -> bool:
    """A family whose every type exists only in nets built for training (losses, Accuracy):
    ONNX export refuses such nets, so it has no ONNX file."""
    from caffe_compat.tools.support_table import builtin_types

    types = [t for t in builtin_types() if registry.facts(t).family == fam]
    return all(registry.facts(t).role == "training" for t in types)


def test_every_family_has_all_its_files():
    missing = [
        pattern.format(fam=fam)
        for fam in sorted(_families())
        for pattern in FAMILY_FILES
        if not (ROOT / pattern.format(fam=fam)).is_file()
        and not (pattern.startswith("converters/onnx") and _training_only(fam))
    ]
    assert not missing, f"layer family files missing: {missing}"


def test_the_contract_is_written_where_a_contributor_reads_it():
    doc = (ROOT / "docs" / "custom_layers.md").read_text(encoding="utf-8")
    for text in (doc, registry.__doc__):
        for place in (*FAMILY_FILES, *OTHER_PLACES):
            generic = place.format(fam="fam") if "{fam}" in place else place
            named = place.format(fam="lrn") if "{fam}" in place else place
            assert generic in text or named in text, f"{place} is not named"
        assert "tests/test_registry.py" in text


def test_parameter_messages_are_fields_of_the_schema():
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for layer_type in sorted(registry.described_types()):
        info = registry.facts(layer_type)
        if info.param_message is None:
            assert info.bias_term is None, layer_type
            continue
        assert info.param_message in fields, f"{layer_type}: no field {info.param_message}"
        if info.bias_term is not None:
            message = fields[info.param_message].message_type
            assert info.bias_term in message.fields_by_name, f"{layer_type}: {info.bias_term}"


def test_layers_that_fold_batchnorm_say_how():
    for layer_type in sorted(registry.described_types()):
        info = registry.facts(layer_type)
        if info.folds_batchnorm:
            assert info.rescale is not None and info.bias_term is not None, layer_type


def _layer_type_strings(path) -> set[str]:
    from caffe_compat.tools.support_table import builtin_types

    known = set(builtin_types()) | registry.described_types()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known
    }


def test_nothing_outside_the_family_files_names_a_layer_type():
    """A type's facts live on its registry entry: no other module keeps a table or an if-chain
    of layer type names (the few that must are listed above, with the reason)."""
    families = {registry.facts(t).family for t in registry.described_types()} | _families()
    found = {}
    for folder in ("caffe_compat", "converters"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            if where.rsplit("/", 1)[0] in FAMILY_FOLDERS and path.stem in families:
                continue
            names = _layer_type_strings(path)
            if names and where not in NAMES_TYPES:
                found[where] = sorted(names)
    assert not found, f"layer types named outside their family files: {found}"
    for where in NAMES_TYPES:
        assert _layer_type_strings(ROOT / where), f"{where} no longer names a type: unlist it"


def test_fork_types_name_their_origin_in_the_support_table():
    """A type from a Caffe fork says where it comes from (its ``origin`` fact), in the README's
    table too (docs/forks.md has the details; data layers such as DenseImageData are no row)."""
    from caffe_compat.tools.support_table import builtin_types, render_table

    table = render_table()
    forks = {t for t in builtin_types() if registry.facts(t).origin}
    assert {"BN", "Upsample", "Interp", "ReLU6", "Mish"} <= forks
    for layer_type in forks:
        row = f"| `{layer_type}` ({registry.facts(layer_type).origin}) |"
        assert row in table, layer_type
