"""caffe-compat upgrade: V1 nets rewritten as V2 text that re-parses to the same net, that OpenCV 4
runs to the same outputs, written atomically and never over an existing file without --force."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import judge_run

from caffe_compat.cli.main import main
from caffe_compat.io import load_prototxt, write_caffemodel
from caffe_compat.io.upgrade import upgrade_net
from caffe_compat.io.writer import definitions_only
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize

OFFICIAL = [
    "deploy_age.prototxt",
    "deploy_gender.prototxt",
    "train_val_age_fold0.prototxt",
    "train_val_gender_fold0.prototxt",
]


def upgrade(capsys, *args) -> tuple[int, str, str]:
    code = main(["upgrade", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", OFFICIAL)
def test_upgraded_official_nets_are_v2_and_the_same_net(shared, tmp_path, capsys, name):
    target = tmp_path / name
    code, out, err = upgrade(capsys, shared / name, "-o", target)
    assert code == 0 and not err
    assert f"wrote {target}" in out and "V1 layers -> V2" in out
    text = target.read_text()
    assert text.startswith("# Upgraded to the V2 format by caffe-compat upgrade from")
    assert "layers {" not in text and "input_dim" not in text and "blobs_lr" not in text
    new, _ = load_prototxt(target)
    assert len(new.layers) == 0 and len(new.layer) > 0
    old, _ = load_prototxt(shared / name)
    upgrade_net(old)
    assert new == old  # every layer, parameter, filler, rule and multiplier
    assert upgrade_net(new) is False  # nothing left to upgrade
    if name.startswith("train_val"):
        assert 'type: "Data"' in text and "lr_mult: 10" in text and "phase: TRAIN" in text
    else:
        assert 'type: "Input"' in text


@pytest.mark.parametrize("phase", ["TEST", "TRAIN"])
def test_upgraded_train_val_loads_like_the_original(shared, tmp_path, capsys, phase):
    target = tmp_path / "tv.prototxt"
    assert upgrade(capsys, shared / "train_val_age_fold0.prototxt", "-o", target)[0] == 0
    old = load_net(shared / "train_val_age_fold0.prototxt", phase=phase)
    new = load_net(target, phase=phase)
    assert (old.prototxt_format, new.prototxt_format) == ("V1", "V2")
    assert [n.name for n in new.graph.nodes] == [n.name for n in old.graph.nodes]
    assert new.graph.dropped == old.graph.dropped
    assert new.inference.shapes == old.inference.shapes


def test_the_judge_runs_the_upgraded_deploy_net_identically(shared, tmp_path, capsys):
    """OpenCV 4 (else the float64 reference) reads the old V1 and the new V2 file alike."""
    original = shared / "deploy_age.prototxt"
    loaded = load_net(original)
    weights = tmp_path / "age_v2.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=5))
    upgraded = tmp_path / "deploy_age_v2.prototxt"
    assert upgrade(capsys, original, "-o", upgraded)[0] == 0
    x = np.random.default_rng(0).uniform(-60, 60, (3, 3, 227, 227)).astype(np.float32)
    outputs = {}
    for label, prototxt in (("old", original), ("new", upgraded)):
        found = judge_run(
            load_net(prototxt, weights), prototxt, weights, {"data": x}, ["fc8", "prob"]
        )
        outputs[label] = [np.array(found["fc8"]), np.array(found["prob"])]
    (fc8_old, prob_old), (fc8_new, prob_new) = outputs["old"], outputs["new"]
    assert prob_new.shape == (3, 8)
    assert np.array_equal(fc8_new, fc8_old) and np.array_equal(prob_new, prob_old)
    assert len(set(prob_new.argmax(1).tolist())) > 1 or np.ptp(fc8_new) > 0  # not a constant net


def test_refuses_to_overwrite_without_force(shared, tmp_path, capsys):
    target = tmp_path / "new.prototxt"
    target.write_text("precious\n")
    code, out, err = upgrade(capsys, shared / "deploy_gender.prototxt", "-o", target)
    assert code == 2 and not out
    assert err.strip() == (
        f"caffe-compat: error: {target}: refusing to overwrite an existing file (pass --force)"
    )
    assert target.read_text() == "precious\n"
    code, out, _ = upgrade(capsys, shared / "deploy_gender.prototxt", "-o", target, "--force")
    assert code == 0
    net, _ = load_prototxt(target)
    assert len(net.layers) == 0 and net.layer[0].input_param.shape[0].dim[0] == 10


def test_in_place_upgrade_with_force(tmp_path, capsys, shared):
    path = tmp_path / "deploy.prototxt"
    path.write_bytes((shared / "deploy_age.prototxt").read_bytes())
    assert upgrade(capsys, path, "-o", path, "--force")[0] == 0
    assert len(load_prototxt(path)[0].layers) == 0


def test_v2_input_is_rewritten_unchanged(tmp_path, capsys):
    source = tmp_path / "v2.prototxt"
    source.write_text('layer { name: "r" type: "ReLU" bottom: "x" top: "x" }\n')
    code, out, _ = upgrade(capsys, source, "-o", tmp_path / "out.prototxt")
    assert code == 0 and "already V2" in out
    assert load_prototxt(tmp_path / "out.prototxt")[0] == load_prototxt(source)[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            'layers { layer { name: "c" type: "convolution" } }\n',
            'layer "c": unknown V0 layer type "convolution"',
        ),
        ('layers { name: "c" type: CONVOLUTION oops: 1 }\n', ':1: layer "c"'),
        ("layer {\n", 'Expected "}"'),
    ],
    ids=["v0", "unknown field", "syntax"],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, content, expected):
    source = tmp_path / "old.prototxt"
    source.write_text(content)
    target = tmp_path / "new.prototxt"
    code, _, err = upgrade(capsys, source, "-o", target)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and expected in err and str(source) in err
    assert not target.exists() and list(tmp_path.iterdir()) == [source]


def test_output_that_is_a_directory(tmp_path, capsys, shared):
    code, _, err = upgrade(capsys, shared / "deploy_age.prototxt", "-o", tmp_path)
    assert code == 2 and "is a directory" in err


def test_output_is_required(capsys, shared):
    with pytest.raises(SystemExit) as exited:  # argparse's usage error, one line, code 2
        main(["upgrade", str(shared / "deploy_age.prototxt")])
    assert exited.value.code == 2
    assert "-o/--output" in capsys.readouterr().err
