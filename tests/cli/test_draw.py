"""caffe-compat draw: every zoo net (slow tier) and V1 / V0 definitions drawn on a plain install
(no Graphviz: the built-in layout), each format by its extension, phases, one-line errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
from _paths import ROOT

from caffe_compat.cli.main import main
from caffe_compat.draw import dot as dot_module

NS = {"s": "http://www.w3.org/2000/svg"}
# the zoo's deploy nets and the whole-net parity tests' (MobileNet-SSD, FCN-8s, DEX, ...)
ZOO = sorted(
    p.relative_to(ROOT).as_posix()
    for p in [*(ROOT / "zoo").glob("*.prototxt"), *(ROOT / "tests/nets/data").glob("*.prototxt")]
)


@pytest.fixture
def no_graphviz(monkeypatch):
    """A plain install: no dot program on the PATH."""
    monkeypatch.setattr(dot_module.shutil, "which", lambda name: None)


def draw(capsys, *args) -> tuple[int, str, str]:
    code = main(["draw", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def layer_names(svg_path) -> list[str]:
    root = ET.parse(svg_path).getroot()
    return [
        g.get("data-name")
        for g in root.iter("{http://www.w3.org/2000/svg}g")
        if g.get("class", "").startswith("layer")
    ]


def test_small_zoo_net_in_each_format_without_graphviz(no_graphviz, tmp_path, capsys):
    net = ROOT / "zoo/bvlc_alexnet.prototxt"
    code, out, err = draw(capsys, net, "-o", tmp_path / "a.svg")
    assert code == 0 and not err
    assert out.strip() == f"wrote {tmp_path / 'a.svg'}: 24 layers, 15 blobs (built-in layout)"
    names = layer_names(tmp_path / "a.svg")
    assert names[:3] == ["data", "conv1", "relu1"] and names[-1] == "prob" and len(names) == 24
    assert draw(capsys, net, "-o", tmp_path / "b.svg", "--rankdir", "TB")[0] == 0
    root = ET.parse(tmp_path / "b.svg").getroot()
    assert float(root.get("height")) > float(root.get("width"))  # top to bottom: taller
    assert draw(capsys, net, "-o", tmp_path / "a.dot")[1].endswith("(DOT text)\n")
    assert (tmp_path / "a.dot").read_text().startswith('digraph "AlexNet" {\n  rankdir=LR;')
    assert oct((tmp_path / "a.svg").stat().st_mode & 0o777) in ("0o644", "0o664", "0o666")


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_net_without_graphviz(no_graphviz, tmp_path, capsys, name):
    from caffe_compat.draw.model import read_definition

    net = read_definition(ROOT / name)
    for suffix in ("svg", "png"):
        code, out, _ = draw(capsys, ROOT / name, "-o", tmp_path / f"n.{suffix}")
        assert code == 0 and "(built-in layout)" in out
    assert layer_names(tmp_path / "n.svg") == [layer.name for layer in net.layer]
    image = cv2.imread(str(tmp_path / "n.png"))
    assert image is not None and (image < 128).any()


def test_v1_train_val_by_phase(no_graphviz, tmp_path, capsys):
    net = ROOT / "tests/fuzz/seeds/small_train_v1.prototxt"
    assert draw(capsys, net, "-o", tmp_path / "all.svg")[0] == 0
    assert layer_names(tmp_path / "all.svg") == [
        "data",
        "data",
        "conv",
        "relu",
        "pool",
        "ip",
        "acc",
        "loss",
    ]
    assert draw(capsys, net, "-o", tmp_path / "test.svg", "--phase", "TEST")[0] == 0
    assert layer_names(tmp_path / "test.svg") == [
        "data",
        "conv",
        "relu",
        "pool",
        "ip",
        "acc",
        "loss",
    ]
    assert draw(capsys, net, "-o", tmp_path / "train.svg", "--phase", "TRAIN")[0] == 0
    assert layer_names(tmp_path / "train.svg") == ["data", "conv", "relu", "pool", "ip", "loss"]


V0 = """name: "v0"
input: "data" input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 } bottom: "data" top: "conv1" }
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
layers { layer { name: "pool2" type: "pool" pool: MAX kernelsize: 3 stride: 2 } bottom: "pad2" top: "pool2" }
"""


def test_v0_definition(no_graphviz, tmp_path, capsys):
    (tmp_path / "v0.prototxt").write_text(V0)
    code = draw(capsys, tmp_path / "v0.prototxt", "-o", tmp_path / "v0.svg", "--display-lrm")[0]
    assert code == 0
    assert layer_names(tmp_path / "v0.svg") == ["input", "conv1", "pool2"]  # padding folded
    root = ET.parse(tmp_path / "v0.svg").getroot()
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "pad: 1" in texts and "lr mult: 1.0, 1.0" in texts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "{tmp}/n.jpg"], "n.jpg: cannot tell the format from the extension"),
        (["-o", "{tmp}"], "is a directory"),
        (["-o", "{tmp}/n.svg", "--stage", "x"], "--stage and --level need --phase TRAIN or TEST"),
        (["-o", "{tmp}/n.svg", "--engine", "graphviz"], "Graphviz's dot program is not installed"),
    ],
)
def test_bad_requests_are_one_line(no_graphviz, tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = draw(capsys, ROOT / "zoo/bvlc_alexnet.prototxt", *args)
    assert code == 2 and not out
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_and_broken_definitions_are_one_line(tmp_path, capsys):
    code, _, err = draw(capsys, tmp_path / "none.prototxt", "-o", tmp_path / "n.svg")
    assert code == 2 and "none.prototxt" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.prototxt").write_text('layer { name: "a" type: "ReLU" oops: 1 }')
    code, _, err = draw(capsys, tmp_path / "bad.prototxt", "-o", tmp_path / "n.svg")
    assert code == 2 and "bad.prototxt" in err and "oops" in err
    assert not (tmp_path / "n.svg").exists()


def test_graphviz_draws_where_installed(tmp_path, capsys):
    if dot_module.shutil.which("dot") is None:
        pytest.skip("Graphviz (dot) not installed")
    (tmp_path / "v0.prototxt").write_text(V0)
    code, out, _ = draw(capsys, tmp_path / "v0.prototxt", "-o", tmp_path / "g.png")
    assert code == 0 and out.endswith("(Graphviz)\n")
    assert cv2.imdecode(np.fromfile(tmp_path / "g.png", np.uint8), cv2.IMREAD_COLOR) is not None
