"""The pickle-free torch output (convert --to torch-weights, caffe_compat.load_torch): plain
safetensors that rebuild the same module, and hostile files refused in one line."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import caffe_compat
from caffe_compat.cli.main import main
from caffe_compat.converters.torch.model import to_torch
from caffe_compat.errors import CaffeCompatError, FileFormatError
from caffe_compat.ir.load import load_net
from caffe_compat.tools.convert import convert


def inputs(n=3) -> torch.Tensor:
    return torch.from_numpy(
        np.random.default_rng(0).normal(0, 50, (n, 3, 12, 12)).astype(np.float32)
    )


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
        (  # the prototxt size limit holds inside the file too
            dict(metadata=lambda m: {**m, "prototxt": m["prototxt"] + "\n#" + "x" * (9 << 20)}),
            ["net definition", "over the limit of 8,388,608", "CAFFE_COMPAT_MAX_PROTOTXT_BYTES"],
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


def test_torch_weights_of_a_net_run_at_a_typical_shape_keep_that_shape(tmp_path):
    """A net without an input shape converted with typical_input_shapes: the file records the
    shape it was built at, so load_torch rebuilds it without being asked again."""
    from caffe_compat.io.writer import definitions_only, write_caffemodel
    from caffe_compat.tools.synth import synthesize

    prototxt = tmp_path / "lenet_deploy.prototxt"
    prototxt.write_text(
        'name: "LeNet" input: "data"\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        "inner_product_param { num_output: 3 } }\n"
    )
    loaded = load_net(prototxt, typical_input_shapes=True)
    assert loaded.graph.inputs == {"data": (1, 1, 28, 28)} and loaded.assumed
    weights = tmp_path / "w.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded))
    result = convert(
        prototxt,
        weights,
        out_prefix=tmp_path / "m",
        targets=["torch-weights"],
        check=False,
        typical_input_shapes=True,
    )
    assert any("running at 1,1,28,28" in note for note in result.notes)
    model = caffe_compat.load_torch(result.outputs["torch-weights"])
    with torch.no_grad():
        out = model(torch.ones(2, 1, 28, 28), outputs=["ip"])["ip"]
    assert out.shape == (2, 3)
