"""Bad input, through the API and through the CLI: the right exception class, a one-line message
naming the file (and the layer and blob where there is one), exit code 2, no traceback. Sizes
declared by a file are checked against the bytes present before anything is allocated."""

from __future__ import annotations

import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from _wire_bytes import field

from caffe_compat.cli.main import main
from caffe_compat.errors import BlobError, FileFormatError, PrototxtError
from caffe_compat.io import (
    load_prototxt,
    read_caffemodel,
    read_hdf5,
    read_mean,
    read_weights,
    write_caffemodel,
    write_hdf5,
)
from caffe_compat.io.caffemodel import read_caffemodel_bytes
from caffe_compat.proto import caffe_pb2

LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 45661179\n"
HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n"


def zip_bytes(tmp_path) -> bytes:
    path = tmp_path / "models.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("age_net.caffemodel", b"\x00" * 100)
    return path.read_bytes()


@pytest.fixture
def model(tmp_path, small_net, blobs):
    path = tmp_path / "good.caffemodel"
    write_caffemodel(path, small_net, blobs)
    return path


def cli_error(capsys, *args) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr and no traceback."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("caffe-compat: error: ")
    return lines[0]


def check(capsys, error_type, api, cli_args, *parts):
    """The API raises ``error_type`` and the CLI exits 2; both messages hold every part."""
    with pytest.raises(error_type) as caught:
        api()
    message = str(caught.value)
    assert "\n" not in message
    line = cli_error(capsys, *cli_args)
    for part in parts:
        assert part in message, (part, message)
        assert part in line, (part, line)
    return message


# -- truncated and corrupt caffemodels -------------------------------------------------------


def cut_points(raw: bytes, blobs) -> dict[str, tuple[int, str | None, str | None]]:
    """Where to cut, and which layer and blob the message must then name."""
    conv_w = raw.index(blobs["conv"][0].tobytes())
    fc_w = raw.index(blobs["fc"][0].tobytes())
    fc_b = raw.index(blobs["fc"][1].tobytes())
    data_layer = raw.index(b'"\x04data')  # the Input layer's top
    return {
        "net header": (3, None, None),  # inside name: "small"
        "first layer header": (data_layer + 2, '"data"', None),
        "conv weights data": (conv_w + 101, '"conv"', "blob 0"),
        "fc weights length": (fc_w - 1, '"fc"', "blob 0"),
        "fc bias data": (fc_b + 5, '"fc"', "blob 1"),
        "last layer": (len(raw) - 2, '"prob"', None),
    }


@pytest.mark.parametrize(
    "where",
    [
        "net header",
        "first layer header",
        "conv weights data",
        "fc weights length",
        "fc bias data",
        "last layer",
    ],
)
def test_truncated_caffemodel(tmp_path, capsys, small_prototxt, model, blobs, where):
    raw = model.read_bytes()
    cut, layer, blob = cut_points(raw, blobs)[where]
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(raw[:cut])
    parts = [str(path), "truncated", f"the file is {cut:,} bytes"]
    parts += [f"layer {layer}"] if layer else []
    parts += [blob] if blob else []
    message = check(
        capsys,
        FileFormatError,
        lambda: read_caffemodel(path),
        ["inspect", small_prototxt, path],
        *parts,
    )
    if blob is None:
        assert "blob" not in message


def test_corrupt_blob_bytes_name_layer_and_blob(tmp_path, capsys, small_prototxt, model, blobs):
    raw = bytearray(model.read_bytes())
    data = raw.index(blobs["fc"][1].tobytes())
    raw[data - 2] = 0xFF  # the packed-data tag becomes field 31 with wire type 7
    path = tmp_path / "corrupt.caffemodel"
    path.write_bytes(bytes(raw))
    check(
        capsys,
        BlobError,
        lambda: read_caffemodel(path),
        ["inspect", small_prototxt, path],
        str(path),
        'layer "fc" (InnerProduct)',
        "blob 1",
        "corrupt blob",
        "wire type 7",
    )


def test_corrupt_layer_bytes_name_the_layer_position(tmp_path, capsys, small_prototxt, model):
    raw = bytearray(model.read_bytes())
    raw[raw.index(b"\n\x04conv")] = 0xFF  # the name's tag
    path = tmp_path / "corrupt.caffemodel"
    path.write_bytes(bytes(raw))
    check(
        capsys,
        FileFormatError,
        lambda: read_caffemodel(path),
        ["inspect", small_prototxt, path],
        str(path),
        "layer #2 (before its name)",
        "corrupt layer",
    )


def test_random_damage_never_escapes_as_another_exception(model):
    raw = model.read_bytes()
    rng = np.random.default_rng(11)
    for trial in range(600):
        damaged = bytearray(raw)
        if trial % 3 == 0:
            damaged = damaged[: rng.integers(0, len(raw))]
        else:
            for index in rng.integers(0, len(raw), rng.integers(1, 6)):
                damaged[index] = rng.integers(0, 256)
        try:
            read_caffemodel_bytes(bytes(damaged), name="fuzz.caffemodel")
        except FileFormatError as error:
            assert "\n" not in str(error) and "fuzz.caffemodel" in str(error)


def test_blob_shape_disagreeing_with_its_data(tmp_path, capsys, small_prototxt):
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="conv", type="Convolution")
    blob = layer.blobs.add(data=[0.5] * 134)
    blob.shape.dim.extend([5, 3, 3, 3])
    path = tmp_path / "mismatch.caffemodel"
    path.write_bytes(net.SerializeToString())
    check(
        capsys,
        BlobError,
        lambda: read_caffemodel(path),
        ["inspect", small_prototxt, path],
        str(path),
        'layer "conv" (Convolution)',
        "blob 0",
        "shape [5, 3, 3, 3] declares 135 values but the file holds 134",
    )


def test_mixed_v1_and_v2_layers(tmp_path):
    net = caffe_pb2.NetParameter()
    net.layer.add(name="a", type="ReLU")
    net.layers.add(name="b", type=caffe_pb2.V1LayerParameter.RELU)
    with pytest.raises(FileFormatError, match="mixes V1 `layers` and V2 `layer`"):
        read_caffemodel_bytes(net.SerializeToString(), name="mixed.caffemodel")


# -- sizes declared by the file: checked before any allocation ------------------------------

HUGE = 10**12
LAYER = caffe_pb2.LayerParameter(name="fc", type="InnerProduct").SerializeToString()
SHAPE = caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[2, 3])).SerializeToString()
DECLARATIONS = {
    # a layer claims 10**12 bytes
    "layer length": (field(100, LAYER, declared=HUGE), ["truncated", "999,999,999,"]),
    # inside a complete layer, a blob claims 10**12 bytes
    "blob length": (
        field(100, LAYER + field(7, SHAPE, declared=HUGE)),
        ['layer "fc"', "blob 0", "corrupt blob", "declares 1000000000000 bytes"],
    ),
    # inside a complete blob, its packed data claims 10**12 bytes
    "data length": (
        field(100, LAYER + field(7, SHAPE + field(5, b"\0" * 24, declared=HUGE))),
        ['layer "fc"', "blob 0", "declares 1000000000000 bytes"],
    ),
    # a complete blob whose shape claims 10**12 floats but holds 6
    "shape": (
        field(
            100,
            LAYER
            + field(
                7,
                caffe_pb2.BlobProto(
                    shape=caffe_pb2.BlobShape(dim=[10**6, 10**6]), data=[1.0] * 6
                ).SerializeToString(),
            ),
        ),
        ['layer "fc"', "blob 0", "declares 1000000000000 values but the file holds 6"],
    ),
}


@pytest.mark.parametrize("declaration", DECLARATIONS)
def test_huge_declared_sizes_fail_fast_without_allocating(tmp_path, capsys, declaration):
    raw, parts = DECLARATIONS[declaration]
    path = tmp_path / "huge.caffemodel"
    path.write_bytes(raw)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(FileFormatError) as caught:
            read_caffemodel(path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 16 * 2**20  # numpy allocations are traced too: nothing near 10**12 bytes
    for part in [str(path), *parts]:
        assert part in str(caught.value)
    line = cli_error(capsys, "inspect", path)
    assert str(path) in line


# -- files that are not what they claim to be ----------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "file is empty (0 bytes)"),
        (LFS, "Git LFS pointer, not the binary caffemodel: the real file of 45661179 bytes"),
        (HTML, "HTML page, not the binary caffemodel"),
        ("zip", "zip archive, not the binary caffemodel: extract it first"),
        (b"\x1f\x8b\x08\x00" + bytes(40), "gzip-compressed"),
    ],
    ids=["empty", "lfs", "html", "zip", "gzip"],
)
def test_weights_that_are_something_else(tmp_path, capsys, small_prototxt, content, expected):
    path = tmp_path / "age_net.caffemodel"
    path.write_bytes(zip_bytes(tmp_path) if content == "zip" else content)
    check(
        capsys,
        FileFormatError,
        lambda: read_weights(path),
        ["inspect", small_prototxt, path],
        str(path),
        expected,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "file is empty (0 bytes)"),
        (LFS, "Git LFS pointer, not the text prototxt"),
        (HTML, "HTML page, not the text prototxt"),
        ("zip", "zip archive, not the text prototxt"),
    ],
    ids=["empty", "lfs", "html", "zip"],
)
def test_prototxt_that_is_something_else(tmp_path, capsys, content, expected):
    path = tmp_path / "deploy.prototxt"
    path.write_bytes(zip_bytes(tmp_path) if content == "zip" else content)
    check(
        capsys, FileFormatError, lambda: load_prototxt(path), ["inspect", path], str(path), expected
    )


def test_missing_files(tmp_path, capsys, small_prototxt, model):
    missing = tmp_path / "nowhere.caffemodel"
    for api in (read_caffemodel, read_weights, read_hdf5, read_mean, load_prototxt):
        with pytest.raises(FileFormatError, match=f"{missing}: no such file"):
            api(missing)
    assert f"{missing}: no such file" in cli_error(capsys, "inspect", small_prototxt, missing)
    assert f"{missing}: no such file" in cli_error(capsys, "inspect", missing, model)


def test_directories(tmp_path, capsys, small_prototxt, model):
    folder = tmp_path / "models"
    folder.mkdir()
    for api in (read_caffemodel, read_weights, read_hdf5, read_mean, load_prototxt):
        with pytest.raises(FileFormatError, match=f"{folder}: is a directory, not a file"):
            api(folder)
    assert "is a directory" in cli_error(capsys, "inspect", small_prototxt, folder)
    assert "is a directory" in cli_error(capsys, "inspect", folder)


def test_empty_files_for_every_reader(tmp_path):
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    for api in (read_caffemodel, read_weights, read_hdf5, read_mean, load_prototxt):
        with pytest.raises(FileFormatError, match=f"{empty}: file is empty"):
            api(empty)


def test_swapped_arguments(tmp_path, capsys, small_prototxt, model):
    check(
        capsys,
        FileFormatError,
        lambda: read_caffemodel(small_prototxt),
        ["inspect", small_prototxt, small_prototxt],
        str(small_prototxt),
        "did you swap",
    )
    check(
        capsys,
        FileFormatError,
        lambda: load_prototxt(model),
        ["inspect", model, small_prototxt],
        str(model),
        "binary file, not a text prototxt: did you swap",
    )


def test_swapped_arguments_of_any_size(tmp_path, capsys, small_prototxt, model):
    """The file-kind check comes before the size limit: a 45 MB caffemodel given as the
    prototxt (the real age net's size) gets the swapped-arguments answer, not the size limit,
    in the reader, every CLI command that opens a net and caffe_compat.dnn."""
    from caffe_compat import dnn

    big = tmp_path / "age_net.caffemodel"
    with open(big, "wb") as handle:  # the model's own bytes, then a sparse tail: 45,660,520 bytes
        handle.write(model.read_bytes())
        handle.truncate(45_660_520)
    swapped = "binary file, not a text prototxt: did you swap"
    with pytest.raises(FileFormatError, match=swapped):
        load_prototxt(big)
    for command in ("inspect", "convert", "verify"):
        line = cli_error(capsys, command, big, small_prototxt)
        assert swapped in line and str(big) in line and "over the limit" not in line, line
    with pytest.raises(FileFormatError, match=swapped):
        dnn.readNetFromCaffe(str(big), str(small_prototxt))
    with pytest.raises(FileFormatError, match=swapped):
        dnn.readNetFromCaffe(str(big))


# -- prototxt text --------------------------------------------------------------------------

BAD_TEXTS = {
    "unknown field": (
        'name: "n"\nlayer {\n  name: "conv"\n  type: "Convolution"\n  convolution_param { num_outputs: 4 }\n}\n',
        5,
        '"conv"',
        'no field named "num_outputs"',
    ),
    "unknown field, one-line layer": (
        'layer { name: "a" type: "ReLU" }\nlayer { name: "b" type: "ReLU" colour: 3 }\n',
        2,
        '"b"',
        'no field named "colour"',
    ),
    # protobuf reports the end of the text, which lies in the unterminated layer
    "missing brace": ('layer {\n  name: "conv"\n  type: "ReLU"\n', 3, '"conv"', 'Expected "}"'),
    "bad value": (
        'layer {\n  name: "ip"\n  inner_product_param { num_output: "many" }\n}\n',
        3,
        '"ip"',
        "Couldn't parse integer",
    ),
    "unknown V1 enum": (
        'layers {\n  name: "conv"\n  type: CONVOLUTIONN\n}\n',
        3,
        '"conv"',
        "CONVOLUTIONN",
    ),
}


@pytest.mark.parametrize("case", BAD_TEXTS)
def test_prototxt_errors_name_file_line_and_layer(tmp_path, capsys, case):
    text, line, layer, detail = BAD_TEXTS[case]
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    parts = [f"{path}:{line}:", detail] + ([f"layer {layer}"] if layer else [])
    check(capsys, PrototxtError, lambda: load_prototxt(path), ["inspect", path], *parts)


def test_non_utf8_prototxt(tmp_path, capsys):
    path = tmp_path / "latin1.prototxt"
    path.write_bytes(
        'name: "n"\n# Réseau de Levi\nlayer { name: "a" type: "ReLU" }\n'.encode("latin-1")
    )
    check(
        capsys,
        FileFormatError,
        lambda: load_prototxt(path),
        ["inspect", path],
        f"{path}:2:",
        "not valid UTF-8 text (byte 0xe9",
        "re-save the file as UTF-8",
    )


# -- HDF5 and mean files ----------------------------------------------------------------------


def test_truncated_hdf5(tmp_path, capsys, small_prototxt, blobs):
    path = tmp_path / "w.h5"
    write_hdf5(path, blobs)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    check(
        capsys,
        FileFormatError,
        lambda: read_hdf5(path),
        ["inspect", small_prototxt, path],
        str(path),
        "truncated HDF5 file",
        f"{len(raw) // 2:,} bytes",
    )


def test_mean_file_with_wrong_dims(tmp_path, capsys, small_prototxt, model):
    blob = caffe_pb2.BlobProto(num=2, channels=3, height=4, width=5, data=[1.0] * 120)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    check(
        capsys,
        BlobError,
        lambda: read_mean(path),
        ["verify", small_prototxt, model, "--mean", path],
        str(path),
        "found shape [2, 3, 4, 5]",
    )


def test_mean_file_that_is_a_caffemodel(capsys, small_prototxt, model):
    check(
        capsys,
        FileFormatError,
        lambda: read_mean(model),
        ["verify", small_prototxt, model, "--mean", model],
        str(model),
        "this is a caffemodel",
    )


def test_caffemodel_that_is_a_mean_file(tmp_path, capsys, small_prototxt):
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=4, width=5, data=[1.0] * 60)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    check(
        capsys,
        FileFormatError,
        lambda: read_caffemodel(path),
        ["inspect", small_prototxt, path],
        str(path),
        "single BlobProto of shape [1, 3, 4, 5] (a mean.binaryproto image?)",
    )
