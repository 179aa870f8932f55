"""Placeholder input shapes (OpenPose's 1x3x1x1, none at all): the error says what to pass."""

from __future__ import annotations

import pytest

from caffe_compat.cli.main import main
from caffe_compat.errors import NetDefinitionError
from caffe_compat.ir.load import load_net
from caffe_compat.ir.placeholder import is_placeholder, placeholder_hint, typical_shape

POSE = """name: "pose"
input: "image" input_dim: 1 input_dim: 3 input_dim: 1 input_dim: 1
layer { name: "conv1_1" type: "Convolution" bottom: "image" top: "conv1_1"
        convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
layer { name: "pool1_stage1" type: "Pooling" bottom: "conv1_1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


@pytest.mark.parametrize(
    ("names", "declared", "expected"),
    [
        ("pose pose_deploy_linevec.prototxt", (1, 3, 1, 1), (1, 3, 368, 368)),
        ("VGG_VOC0712_SSD_300x300_deploy deploy.prototxt", None, (1, 3, 300, 300)),
        ("MobileNet-SSD MobileNetSSD_deploy.prototxt", (2, 3, 1, 1), (2, 3, 300, 300)),
        ("ResNet-152 ResNet-152-deploy.prototxt", None, (1, 3, 224, 224)),
        ("CaffeNet deploy.prototxt", None, (1, 3, 227, 227)),
        ("LeNet lenet.prototxt", None, (1, 1, 28, 28)),
        ("pspnet101_VOC2012 pspnet101_VOC2012_473.prototxt", None, (1, 3, 473, 473)),
        ("InceptionV3 deploy_inception-v3.prototxt", None, (1, 3, 299, 299)),
        ("mystery net.prototxt", None, None),
    ],
)
def test_typical_shape_from_the_names(names, declared, expected):
    assert typical_shape(names, declared) == expected


def test_placeholders_are_missing_or_one_by_one_images():
    assert is_placeholder(None) and is_placeholder((1, 3, 1, 1))
    assert not is_placeholder((1, 3, 368, 368)) and not is_placeholder((4, 10))
    assert "1,3,368,368" in placeholder_hint("image", (1, 3, 1, 1), "pose_deploy")
    assert placeholder_hint("data", None, "x").startswith('input "data" has no declared shape')


def test_a_rule_failing_on_a_placeholder_names_the_input_and_a_typical_shape(tmp_path, capsys):
    path = tmp_path / "pose_deploy.prototxt"
    path.write_text(POSE)
    with pytest.raises(NetDefinitionError) as info:
        load_net(path)
    message = str(info.value)
    assert 'layer "pool1_stage1"' in message and "larger than the input size 1" in message
    assert 'input "image" is declared 1x3x1x1, a placeholder' in message
    assert "1,3,368,368" in message and "input_shapes={'image': (N, C, H, W)}" in message
    assert main(["-q", "synth", str(path), "-o", str(tmp_path / "w.caffemodel")]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "--input-shape image=N,C,H,W" in line and "368" in line
    assert load_net(path, input_shapes={"image": (1, 3, 16, 16)}).graph.shapes["pool1"] == (
        1,
        2,
        8,
        8,
    )


def test_inspect_lists_the_placeholder_beside_the_failing_rule(tmp_path, capsys):
    path = tmp_path / "pose_deploy.prototxt"
    path.write_text(POSE)
    main(["inspect", str(path)])
    out = capsys.readouterr().out
    assert "kernel 2 (pad 0) is larger than the input size 1" in out
    assert 'input "image" is declared 1x3x1x1' in out and "--input-shape image=" in out


def test_no_shape_at_all_gives_the_typical_one(tmp_path):
    path = tmp_path / "ResNet-50-deploy.prototxt"
    path.write_text(
        'name: "ResNet-50" input: "data"\n'
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
    )
    with pytest.raises(NetDefinitionError, match=r'"data" has no declared shape.*1,3,224,224'):
        load_net(path)


def test_typical_input_shapes_run_a_failing_placeholder_at_the_family_size_and_say_so(
    tmp_path, capsys
):
    path = tmp_path / "pose_deploy.prototxt"
    path.write_text(POSE)
    with pytest.raises(NetDefinitionError, match=r"\(or typical_input_shapes=True\)"):
        load_net(path)
    loaded = load_net(path, typical_input_shapes=True)
    assert loaded.graph.inputs == {"image": (1, 3, 368, 368)}
    assert loaded.inference.shapes["pool1"] == (1, 2, 184, 184)
    (note,) = loaded.assumed
    assert note.startswith(
        'input "image" is declared 1x3x1x1, a placeholder: running at 1,3,368,368'
    )
    given = load_net(path, input_shapes={"image": (1, 3, 8, 8)}, typical_input_shapes=True)
    assert given.graph.inputs == {"image": (1, 3, 8, 8)} and not given.assumed
    out = tmp_path / "w.caffemodel"
    assert main(["synth", str(path), "-o", str(out), "--typical-input-shape"]) == 0
    assert main(["-q", "inspect", str(path), "--typical-input-shape"]) == 0
    assert "running at 1,3,368,368" in capsys.readouterr().out


def test_typical_input_shapes_keep_a_placeholder_the_net_runs_at_and_unknown_families(tmp_path):
    runs = tmp_path / "pose_deploy.prototxt"
    runs.write_text(POSE.replace("kernel_size: 2 stride: 2", "kernel_size: 1 stride: 1"))
    assert load_net(runs, typical_input_shapes=True).graph.inputs == {"image": (1, 3, 1, 1)}
    mystery = tmp_path / "mystery.prototxt"
    mystery.write_text('input: "data"\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    with pytest.raises(NetDefinitionError, match='"data" has no declared shape; pass input_sh'):
        load_net(mystery, typical_input_shapes=True)


def test_a_family_size_the_layers_refuse_falls_back_to_the_first_common_size_they_accept(tmp_path):
    """A multi-scale net (DeepLab-ResNet: a half-size branch zoomed back and joined) realigns
    only at odd sides: ResNet's 224 is refused, so the first common size it accepts (227) is
    used, and the note says both."""
    path = tmp_path / "resnet_ms.prototxt"
    path.write_text(
        'name: "resnet_ms" input: "data"\n'
        'layer { name: "half" type: "Interp" bottom: "data" top: "half" '
        "interp_param { shrink_factor: 2 } }\n"
        'layer { name: "back" type: "Interp" bottom: "half" top: "back" '
        "interp_param { zoom_factor: 2 } }\n"
        'layer { name: "join" type: "Eltwise" bottom: "data" bottom: "back" top: "join" '
        "eltwise_param { operation: MAX } }\n"
    )
    loaded = load_net(path, typical_input_shapes=True)
    assert loaded.graph.inputs == {"data": (1, 3, 227, 227)}
    (note,) = loaded.assumed
    assert "running at 1,3,227,227" in note and "refuse 1,3,224,224, the usual size" in note
