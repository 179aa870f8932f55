"""The exception tree's one-line messages: where (file:line, layer and type, blob), what, and the
remedy worded for the caller; names from files cannot drive the terminal."""

from __future__ import annotations

from caffe_compat.errors import (
    CaffeCompatError,
    MissingFileError,
    NetDefinitionError,
    Remedy,
    UnsupportedLayer,
    UnsupportedLayersError,
)


def test_one_line_names_file_line_layer_type_and_blob():
    error = NetDefinitionError(
        "kernel_size must be set\n  (and positive)",
        path="net.prototxt",
        line=12,
        layer="conv1",
        layer_type="Convolution",
        blob="data",
    )
    assert str(error) == (
        'net.prototxt:12: layer "conv1" (Convolution): blob data: kernel_size must be set '
        "(and positive)"
    )
    assert error.to_dict() == {
        "error": "NetDefinitionError",
        "reason": "kernel_size must be set\n  (and positive)",
        "path": "net.prototxt",
        "layer": "conv1",
        "type": "Convolution",
        "blob": "data",
        "line": 12,
        "remedy": None,
    }


def test_a_reason_alone_and_a_remedy_in_each_callers_words():
    assert str(CaffeCompatError("nothing to do")) == "nothing to do"
    error = CaffeCompatError(
        "no batch axis",
        path="a.prototxt",
        remedy=Remedy("input_shapes", "data", "to give its shape"),
    )
    assert str(error) == (
        "a.prototxt: no batch axis; pass input_shapes={'data': (N, C, H, W)} to give its shape"
    )
    flags = {"input_shapes": "--input-shape {value}=N,C,H,W"}
    assert error.render(flags) == (
        "a.prototxt: no batch axis; pass --input-shape data=N,C,H,W to give its shape"
    )
    assert error.to_dict()["remedy"] == {"option": "input_shapes", "value": "data"}


def test_names_from_files_are_escaped():
    text = str(CaffeCompatError("bad", layer="x\x1b[2Jy", path="f\u202e.prototxt"))
    assert "\x1b" not in text and "\u202e" not in text
    assert text.endswith(": bad") and "\n" not in text


def test_every_unsupported_layer_grouped_by_type_and_back_end():
    error = UnsupportedLayersError(
        [
            UnsupportedLayer("m1", "Mish", "shape"),
            UnsupportedLayer("m2", "Mish", "shape"),
            UnsupportedLayer("p", "Pooling", "onnx", "STOCHASTIC pooling"),
        ],
        path="n.prototxt",
    )
    assert str(error) == (
        "n.prototxt: 3 unsupported layer(s): Mish [shape]: m1, m2; "
        "Pooling [onnx: STOCHASTIC pooling]: p"
    )
    assert [u["name"] for u in error.to_dict()["unsupported"]] == ["m1", "m2", "p"]


def test_a_missing_file_says_where_it_belongs():
    error = MissingFileError(
        "weights are not here",
        file="age.caffemodel",
        expected_path="/cache/age.caffemodel",
        sources=["https://example.org/age.caffemodel"],
        remedy=Remedy("download", purpose="to download and verify it"),
    )
    assert str(error) == (
        "/cache/age.caffemodel: weights are not here; pass download=True to download and verify it"
    )
    assert error.to_dict()["sources"] == ["https://example.org/age.caffemodel"]


def test_a_full_disk_is_one_line_not_an_internal_error():
    import errno

    from caffe_compat.errors import disk_full

    full = OSError(errno.ENOSPC, "No space left on device", "/tmp/x/model.onnx")
    found = disk_full(full)
    assert found is not None and "the disk is full" in str(found) and "TMPDIR" in str(found)
    numpy_words = OSError("Not enough free space to write 22118400 bytes after offset 128")
    assert disk_full(numpy_words) is not None
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full(ValueError("a bug")) is None
