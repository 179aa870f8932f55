"""Whole nets in the shape of the forks' famous ones (docs/forks.md), small enough for the fast
tier: a SegNet-like encoder-decoder (caffe-segnet's BN, pooling masks, Upsample unpooling) and a
PSPNet-like pyramid (yjxiong's BN, Interp) go from synthesized weights through ``convert`` (ONNX
and PyTorch) and ``verify`` (both back ends against the float64 reference) at the CLI."""

from __future__ import annotations

import json

import pytest

from caffe_compat.cli.main import main
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize


def conv(name: str, bottom: str, out: int, k: int = 3, pad: int = 1, stride: int = 1) -> str:
    return (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
        f"convolution_param {{ num_output: {out} kernel_size: {k} pad: {pad} stride: {stride} }} }}\n"
    )


def bn_relu(name: str, bottom: str, bn_param: str) -> str:
    return (
        f'layer {{ name: "{name}_bn" type: "BN" bottom: "{bottom}" top: "{bottom}" bn_param {{ {bn_param} }} }}\n'
        f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{bottom}" top: "{bottom}" }}\n'
    )


def pool_with_mask(name: str, bottom: str) -> str:
    return (
        f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" top: "{name}_mask" '
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
    )


def unpool(name: str, bottom: str, mask: str, size: int) -> str:
    return (
        f'layer {{ name: "{name}" type: "Upsample" bottom: "{bottom}" bottom: "{mask}" top: "{name}" '
        f"upsample_param {{ upsample_h: {size} upsample_w: {size} }} }}\n"
    )


INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 24 dim: 24 } } }\n'
INFERENCE = "bn_mode: INFERENCE"

SEGNET = (
    'name: "segnet_like"\n'
    + INPUT
    + conv("conv1", "data", 8)
    + bn_relu("conv1", "conv1", INFERENCE)
    + pool_with_mask("pool1", "conv1")
    + conv("conv2", "pool1", 8)
    + bn_relu("conv2", "conv2", INFERENCE)
    + pool_with_mask("pool2", "conv2")
    + unpool("up2", "pool2", "pool2_mask", 12)
    + conv("conv2_d", "up2", 8)
    + bn_relu("conv2_d", "conv2_d", INFERENCE)
    + unpool("up1", "conv2_d", "pool1_mask", 24)
    + conv("conv1_d", "up1", 5)
    + 'layer { name: "prob" type: "Softmax" bottom: "conv1_d" top: "prob" }\n'
)

FROZEN = 'slope_filler { type: "constant" value: 1 } frozen: true'


def pyramid_level(i: int, kernel: int) -> str:
    return (
        f'layer {{ name: "pool{i}" type: "Pooling" bottom: "feat" top: "pool{i}" '
        f"pooling_param {{ pool: AVE kernel_size: {kernel} stride: {kernel} }} }}\n"
        + conv(f"psp{i}", f"pool{i}", 4, k=1, pad=0)
        + bn_relu(f"psp{i}", f"psp{i}", FROZEN)
        + f'layer {{ name: "up{i}" type: "Interp" bottom: "psp{i}" top: "up{i}" '
        "interp_param { height: 12 width: 12 } }\n"
    )


PSPNET = (
    'name: "pspnet_like"\n'
    + INPUT
    + conv("conv1", "data", 8, stride=2)
    + bn_relu("conv1", "conv1", FROZEN)
    + conv("feat", "conv1", 8)
    + bn_relu("feat", "feat", FROZEN)
    + 'layer { name: "pool_global" type: "Pooling" bottom: "feat" top: "pool_global" pooling_param { pool: AVE global_pooling: true } }\n'
    + conv("psp_global", "pool_global", 4, k=1, pad=0)
    + 'layer { name: "up_global" type: "Interp" bottom: "psp_global" bottom: "feat" top: "up_global" }\n'
    + pyramid_level(2, 6)
    + pyramid_level(3, 4)
    + 'layer { name: "concat" type: "Concat" bottom: "feat" bottom: "up_global" bottom: "up2" bottom: "up3" top: "concat" }\n'
    + conv("cls", "concat", 5, k=1, pad=0)
    + 'layer { name: "zoom" type: "Interp" bottom: "cls" top: "zoom" interp_param { zoom_factor: 2 pad_beg: 0 pad_end: 0 } }\n'
    + 'layer { name: "prob" type: "Softmax" bottom: "zoom" top: "prob" }\n'
)


@pytest.mark.slow  # a few seconds each: convert and verify run every back end
@pytest.mark.parametrize(("name", "text"), [("segnet", SEGNET), ("pspnet", PSPNET)])
def test_fork_net_converts_and_verifies(tmp_path, capsys, name, text):
    prototxt = tmp_path / f"{name}.prototxt"
    prototxt.write_text(text)
    loaded = load_net(prototxt)
    weights = tmp_path / f"{name}.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=1))
    out = tmp_path / "out" / name
    out.parent.mkdir()
    code = main(
        ["convert", str(prototxt), str(weights), "-o", str(out), "--to", "onnx,torch", "--json"]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert json.loads(printed)
    assert (tmp_path / "out" / f"{name}.onnx").is_file()
    code = main(["verify", str(prototxt), str(weights), "--batch", "2", "--cpu-only"])
    report = capsys.readouterr().out
    assert code == 0, report
    assert "prob" in report
