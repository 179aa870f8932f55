"""The committed caffe_pb2.py matches caffe.proto, and the field numbers the hand-written wire
walker relies on are Caffe's, read from the descriptors (not restated from our own code)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _paths import ROOT

from caffe_compat.proto import caffe_pb2

PINNED_GENCODE = "6.31.1"  # what grpcio-tools 1.75.1 writes; see proto/__init__.py


def _protoc_python() -> str | None:
    """A Python with grpcio-tools: this one, or the one CI names (its proto environment)."""
    if importlib.util.find_spec("grpc_tools") is not None:
        return sys.executable
    named = os.environ.get("CAFFE_COMPAT_PROTOC_PYTHON")
    return named if named and Path(named).exists() else None


def _bundled_gencode(tmp_path: Path, python: str) -> str | None:
    """The protobuf gencode version the installed grpc_tools protoc writes, probed on a tiny file."""
    (tmp_path / "probe.proto").write_text(
        'syntax = "proto2";\nmessage Probe { optional int32 a = 1; }\n'
    )
    code = (
        "import sys; from grpc_tools import protoc; "
        f"sys.exit(protoc.main(['protoc', '-I{tmp_path}', '--python_out={tmp_path}', 'probe.proto']))"
    )
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    generated = tmp_path / "probe_pb2.py"
    if result.returncode != 0 or not generated.exists():
        return None
    match = re.search(r"Protobuf Python Version: (\S+)", generated.read_text())
    return match.group(1) if match else None


def test_committed_bindings_match_caffe_proto(tmp_path):
    python = _protoc_python()
    if python is None:
        pytest.skip(
            "grpcio-tools is not installed and CAFFE_COMPAT_PROTOC_PYTHON names no Python that "
            "has it (.ci/run sets it)"
        )
    gencode = _bundled_gencode(tmp_path, python)
    if gencode != PINNED_GENCODE:
        pytest.skip(
            f"the installed grpcio-tools writes gencode {gencode}, the committed bindings are "
            f"{PINNED_GENCODE} (grpcio-tools==1.75.1); CI runs proto/generate.py --check with it"
        )
    result = subprocess.run(
        [python, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_bindings_declare_the_pinned_gencode():
    text = (ROOT / "proto" / "caffe_pb2.py").read_text()
    assert f"# Protobuf Python Version: {PINNED_GENCODE}" in text
    assert "source: caffe.proto" in text


# (message, field) -> Caffe's field number, and whether the field is packed on the wire
FIELDS = {
    ("NetParameter", "name"): (1, False),
    ("NetParameter", "layer"): (100, False),
    ("NetParameter", "layers"): (2, False),
    ("LayerParameter", "name"): (1, False),
    ("LayerParameter", "type"): (2, False),
    ("LayerParameter", "blobs"): (7, False),
    ("V1LayerParameter", "layer"): (1, False),
    ("V1LayerParameter", "name"): (4, False),
    ("V1LayerParameter", "type"): (5, False),
    ("V1LayerParameter", "blobs"): (6, False),
    ("BlobProto", "num"): (1, False),
    ("BlobProto", "channels"): (2, False),
    ("BlobProto", "height"): (3, False),
    ("BlobProto", "width"): (4, False),
    ("BlobProto", "data"): (5, True),
    ("BlobProto", "diff"): (6, True),
    ("BlobProto", "shape"): (7, False),
    ("BlobProto", "double_data"): (8, True),
    ("BlobProto", "double_diff"): (9, True),
    ("BlobShape", "dim"): (1, True),
    ("LRNParameter", "k"): (5, False),
    ("PoolingParameter", "round_mode"): (13, False),
    ("LayerParameter", "permute_param"): (202, False),  # SSD fork fields
    ("LayerParameter", "prior_box_param"): (203, False),
    ("LayerParameter", "detection_output_param"): (204, False),
    ("LayerParameter", "norm_param"): (206, False),
}


@pytest.mark.parametrize(("message", "name"), FIELDS, ids=[f"{m}.{n}" for m, n in FIELDS])
def test_field_numbers_are_caffes(message, name):
    number, packed = FIELDS[(message, name)]
    descriptor = getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[name]
    assert descriptor.number == number
    assert descriptor.GetOptions().packed is packed


def test_wire_types_the_walker_expects():
    fd = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
    assert fd["data"].type == fd["data"].TYPE_FLOAT
    assert fd["double_data"].type == fd["double_data"].TYPE_DOUBLE
    assert fd["num"].type == fd["num"].TYPE_INT32
    assert fd["shape"].message_type.full_name == "caffe.BlobShape"
    v1_type = caffe_pb2.V1LayerParameter.DESCRIPTOR.fields_by_name["type"]
    assert v1_type.enum_type.full_name == "caffe.V1LayerParameter.LayerType"
    assert caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name["layer"].message_type.full_name == (
        "caffe.LayerParameter"
    )
