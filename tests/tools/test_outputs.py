"""What convert and every atomic write leave on disk: the user's umask, no stale temporaries, a
set of outputs replaced together and recording one source, and a torch output with no pickle."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

import caffe_compat
from caffe_compat.cli.main import main
from caffe_compat.converters.torch.model import to_torch
from caffe_compat.errors import CaffeCompatError, FileFormatError
from caffe_compat.io import atomic
from caffe_compat.io.atomic import atomic_output, atomic_outputs, remove_stale_partials
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools import convert as convert_module
from caffe_compat.tools.convert import convert
from caffe_compat.tools.provenance import check_same_source, read_provenance
from caffe_compat.tools.synth import synthesize

NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc/out" type: "InnerProduct" bottom: "conv1" top: "fc"
        inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def small(tmp_path):
    """A small net (a layer name with '/', BatchNorm + Scale to fold) and two weight files."""
    prototxt = tmp_path / "small.prototxt"
    prototxt.write_text(NET)
    loaded = load_net(prototxt)
    files = []
    for seed in (0, 1):
        path = tmp_path / f"w{seed}.caffemodel"
        write_caffemodel(path, definitions_only(loaded.net.layer), synthesize(loaded, seed=seed))
        files.append(path)
    return prototxt, files


def inputs(n=3) -> torch.Tensor:
    return torch.from_numpy(
        np.random.default_rng(0).normal(0, 50, (n, 3, 12, 12)).astype(np.float32)
    )


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(value: int) -> None:
        os.umask(value)

    yield set_mask
    os.umask(previous)


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


# --------------------------------------------------------------------------------------------
# Atomic writes


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected, small):
    umask(mask)
    with atomic_output(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"x")
    assert mode(tmp_path / "a.bin") == expected
    prototxt, (weights, _) = small
    result = convert(
        prototxt,
        weights,
        out_prefix=tmp_path / "m",
        targets=["onnx", "torch", "torch-weights"],
        check=False,
    )
    assert {mode(p) for p in result.outputs.values()} == {expected}


def test_a_writer_that_replaces_the_temporary_file_still_gets_the_umask_mode(tmp_path, umask):
    umask(0o022)
    with atomic_output(tmp_path / "a.bin") as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    assert mode(tmp_path / "a.bin") == 0o644


def test_no_overwrite_is_race_free_and_all_or_none(tmp_path):
    (tmp_path / "b.txt").write_text("old")
    with (
        pytest.raises(CaffeCompatError, match="refusing to overwrite"),
        atomic_outputs([tmp_path / "a.txt", tmp_path / "b.txt"], overwrite=False) as (a, b),
    ):
        a.write_text("new a")
        b.write_text("new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]  # no temporaries, no a.txt
    assert (tmp_path / "b.txt").read_text() == "old"


def test_a_failed_block_replaces_nothing(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    with (
        pytest.raises(RuntimeError),
        atomic_outputs([tmp_path / "a.txt", tmp_path / "b.txt"]) as (a, _),
    ):
        a.write_text("new")
        raise RuntimeError("the second writer failed")
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["old", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_set_interrupted_between_renames_never_mixes_old_and_new(tmp_path, monkeypatch):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    calls = []
    real = os.replace

    def replace_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the first rename
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace_then_die)
    with (
        pytest.raises(KeyboardInterrupt),
        atomic_outputs([tmp_path / "a.txt", tmp_path / "b.txt"]) as (a, b),
    ):
        a.write_text("new")
        b.write_text("new")
    left = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert left == {"a.txt": "new"}  # b is missing, not old beside a new a


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "m.onnx"
    pid = dead_pid()
    stale = tmp_path / f".m.{pid}.0a1b2c3d.partial.onnx"
    running = tmp_path / f".m.{os.getpid()}.0a1b2c3d.partial.onnx"
    other_target = tmp_path / f".n.{pid}.0a1b2c3d.partial.onnx"
    foreign = tmp_path / f".m.{pid}.notours.partial.onnx"
    for path in (stale, running, other_target, foreign):
        path.write_bytes(b"x")
    assert remove_stale_partials(target) == [stale]
    assert sorted(tmp_path.iterdir()) == sorted([running, other_target, foreign])


# --------------------------------------------------------------------------------------------
# convert: sets, provenance, stale temporaries


def test_outputs_of_one_convert_record_the_same_source(small, tmp_path):
    prototxt, (weights, other) = small
    result = convert(
        prototxt,
        weights,
        out_prefix=tmp_path / "m",
        targets=["onnx", "torch", "torch-weights"],
        check=False,
    )
    record = check_same_source(result.outputs.values())
    assert set(record) == {"converter", "source_prototxt", "source_weights", "conversion"}
    assert "w0.caffemodel" in record["source_weights"] and "git-blob=" in record["source_weights"]
    # Another run with other weights, replacing only the ONNX file: the pair is told apart.
    convert(prototxt, other, out_prefix=tmp_path / "m", targets=["onnx"], check=False, force=True)
    with pytest.raises(CaffeCompatError) as info:
        check_same_source([tmp_path / "m.pt2", tmp_path / "m.onnx"])
    message = str(info.value)
    assert "not from the same conversion" in message and "source_weights" in message


def test_reading_a_pt2_record_unpickles_nothing(small, tmp_path, monkeypatch):
    prototxt, (weights, _) = small
    result = convert(prototxt, weights, out_prefix=tmp_path / "m", targets=["torch"], check=False)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    assert read_provenance(result.outputs["torch"])["conversion"]


def test_a_failing_writer_leaves_the_previous_outputs(small, tmp_path, monkeypatch):
    prototxt, (weights, other) = small
    convert(
        prototxt, weights, out_prefix=tmp_path / "m", targets=["onnx", "torch-weights"], check=False
    )
    before = {p.name: p.read_bytes() for p in tmp_path.glob("m.*")}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert_module, "save_torch_weights", broken)
    with pytest.raises(OSError):
        convert(
            prototxt,
            other,
            out_prefix=tmp_path / "m",
            targets=["onnx", "torch-weights"],
            check=False,
            force=True,
        )
    assert {p.name: p.read_bytes() for p in tmp_path.glob("m.*")} == before  # ONNX not replaced
    assert not list(tmp_path.glob(".m.*"))


def test_convert_clears_what_an_interrupted_run_left(small, tmp_path):
    prototxt, (weights, _) = small
    pid = dead_pid()
    stale = [tmp_path / f".m.{pid}.deadbeef.partial{s}" for s in (".onnx", ".pt2", ".safetensors")]
    for path in stale:
        path.write_bytes(b"half")
    convert(prototxt, weights, out_prefix=tmp_path / "m", targets=["onnx"], check=False)
    assert not any(p.exists() for p in stale)


# --------------------------------------------------------------------------------------------
# torch-weights: the pickle-free torch output


@pytest.mark.parametrize("optimize", [False, True])
def test_torch_weights_rebuild_the_same_module(small, tmp_path, monkeypatch, optimize):
    prototxt, (weights, _) = small
    result = convert(
        prototxt,
        weights,
        out_prefix=tmp_path / "m",
        targets=["torch-weights"],
        optimize=optimize,
        check=False,
    )
    path = result.outputs["torch-weights"]
    assert path.name == "m.safetensors"
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    model = caffe_compat.load_torch(path)
    graph = load_net(prototxt, weights).graph
    if optimize:
        from caffe_compat.passes import optimize as optimize_graph

        graph = optimize_graph(graph)
        assert "bn1" not in [n.name for n in graph.nodes]
    reference = to_torch(graph).eval()
    with torch.no_grad():
        got, want = (
            model(inputs(), outputs=["fc", "prob"]),
            reference(inputs(), outputs=["fc", "prob"]),
        )
    for blob in want:
        assert torch.equal(got[blob], want[blob]), blob
    assert model.provenance["conversion"] and "w0.caffemodel" in model.provenance["source_weights"]


def test_torch_weights_are_plain_safetensors(small, tmp_path):
    """Readable by any safetensors reader: the Caffe blobs by <layer>/<index>, exactly."""
    from safetensors.numpy import load_file

    prototxt, (weights, _) = small
    result = convert(
        prototxt, weights, out_prefix=tmp_path / "m", targets=["torch-weights"], check=False
    )
    tensors = load_file(str(result.outputs["torch-weights"]))
    graph = load_net(prototxt, weights).graph
    expected = {f"{n.name}/{i}": b for n in graph.nodes for i, b in enumerate(n.blobs)}
    assert set(tensors) == set(expected) and "fc/out/0" in tensors
    for key, array in expected.items():
        np.testing.assert_array_equal(tensors[key], array)


def _rewrite(path, *, tensors=None, metadata=None):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="numpy") as handle:
        old_meta = handle.metadata()
        old = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    save_file(
        tensors(old) if tensors else old,
        str(path),
        metadata=metadata(old_meta) if metadata else old_meta,
    )


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            dict(tensors=lambda t: {**t, "conv1/0": t["conv1/0"][:2]}),
            ["conv1", "2x3x3x3", "4x3x3x3"],
        ),
        (dict(tensors=lambda t: {k: v for k, v in t.items() if k != "fc/out/1"}), ["fc/out"]),
        (dict(tensors=lambda t: {**t, "conv1/0": t["conv1/0"].astype(np.float64)}), ["float64"]),
        (dict(tensors=lambda t: {**t, "conv1/7": t["conv1/0"]}), ["blob indices"]),
        (dict(metadata=lambda m: {**m, "format": "other"}), ["not a caffe-compat torch-weights"]),
        (dict(metadata=lambda m: {**m, "net_options": '{"exec": 1}'}), ["net_options"]),
        (
            dict(metadata=lambda m: {**m, "prototxt": 'layer { name: "x\x1b[2J" type: "Nope" }'}),
            ["Nope"],
        ),
    ],
)
def test_hostile_torch_weights_are_one_line_errors(small, tmp_path, edit, words):
    prototxt, (weights, _) = small
    path = convert(
        prototxt, weights, out_prefix=tmp_path / "m", targets=["torch-weights"], check=False
    ).outputs["torch-weights"]
    _rewrite(path, **edit)
    with pytest.raises(CaffeCompatError) as info:
        caffe_compat.load_torch(path)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message and str(path) in message
    for word in words:
        assert word in message, message


def test_files_that_are_not_torch_weights(tmp_path):
    junk = tmp_path / "x.safetensors"
    junk.write_bytes(b"\xff" * 8 + b"{}")  # a header length past the end of the file
    with pytest.raises(FileFormatError, match="not a readable safetensors file"):
        caffe_compat.load_torch(junk)
    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(FileFormatError):
        caffe_compat.load_torch(pickled)
    with pytest.raises(FileFormatError, match="cannot open"):
        caffe_compat.load_torch(tmp_path / "missing.safetensors")


def test_cli_convert_to_torch_weights(small, tmp_path, capsys):
    prototxt, (weights, _) = small
    prefix = tmp_path / "cli"
    code = main(
        [
            "convert",
            str(prototxt),
            str(weights),
            "-o",
            str(prefix),
            "--to",
            "torch-weights",
            "--no-check",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and f"{prefix}.safetensors" in out
    assert (
        caffe_compat.load_torch(f"{prefix}.safetensors").provenance["format"]
        == "caffe-compat.torch-weights"
    )
    assert (
        main(
            [
                "convert",
                str(prototxt),
                str(weights),
                "-o",
                str(prefix),
                "--to",
                "torch-weights",
                "--no-check",
            ]
        )
        == 2
    )
    assert "refusing to overwrite" in capsys.readouterr().err


def test_no_pickle_in_what_convert_writes(small, tmp_path):
    """Neither the ONNX file nor the torch-weights file holds a pickle opcode stream."""
    prototxt, (weights, _) = small
    result = convert(
        prototxt, weights, out_prefix=tmp_path / "m", targets=["onnx", "torch-weights"], check=False
    )
    for path in result.outputs.values():
        head = path.read_bytes()[:2]
        assert head != b"\x80\x02" and head[:1] != b"\x80"  # pickle protocol 2+ header
    header_size = int.from_bytes(result.outputs["torch-weights"].read_bytes()[:8], "little")
    header = json.loads(result.outputs["torch-weights"].read_bytes()[8 : 8 + header_size])
    assert header["__metadata__"]["format"] == "caffe-compat.torch-weights"
