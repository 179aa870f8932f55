"""C3D's Convolution3D and Pooling3D: PyTorch, ONNX Runtime and the float64 reference against
loops written here from convolution3d_layer.cpp and pool3d_layer.cpp (C3D v1.0 = v1.1), at
batches 2 and 3, and Convolution3D against real BVLC Caffe's N-D Convolution (recorded). OpenCV
4's Caffe reader knows neither type (checked below): no OpenCV judge."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from caffe_compat.verify.opencv import opencv_caffe_available

SHAPE = (2, 3, 5, 6, 7)  # N x C x L x H x W: odd sizes give clipped last windows


def video_net(body: str, shape: tuple[int, ...] = SHAPE) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return (
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
        + body
    )


def pool3d_loops(x, pool, k, kd, s, ts, pad):
    """Pooling3DLayer::Forward_cpu, window by window."""
    n, c, length, height, width = x.shape
    ph = math.ceil((height + 2 * pad - k) / s) + 1
    pw = math.ceil((width + 2 * pad - k) / s) + 1
    pl = math.ceil((length - kd) / ts) + 1
    out = np.zeros((n, c, pl, ph, pw))
    for i, j, m in itertools.product(range(pl), range(ph), range(pw)):
        l0, h0, w0 = i * ts, j * s - pad, m * s - pad
        l1 = min(l0 + kd, length)
        h1, w1 = min(h0 + k, height + pad), min(w0 + k, width + pad)
        size = (h1 - h0) * (w1 - w0) * (l1 - l0)
        window = x[:, :, l0:l1, max(h0, 0) : min(h1, height), max(w0, 0) : min(w1, width)]
        if pool == "MAX":
            out[:, :, i, j, m] = window.max(axis=(2, 3, 4))
        else:
            out[:, :, i, j, m] = window.sum(axis=(2, 3, 4)) / size
    return out


def conv3d_loops(x, weight, bias, pad, tpad, s, ts):
    """vol2col + GEMM, written as a sum over output positions and kernel taps."""
    o, _, kd, k, _ = weight.shape
    xp = np.pad(x, [(0, 0), (0, 0), (tpad, tpad), (pad, pad), (pad, pad)])
    n, _, length, height, width = xp.shape
    ol, oh, ow = (length - kd) // ts + 1, (height - k) // s + 1, (width - k) // s + 1
    out = np.zeros((n, o, ol, oh, ow))
    for i, j, m in itertools.product(range(ol), range(oh), range(ow)):
        patch = xp[:, :, i * ts : i * ts + kd, j * s : j * s + k, m * s : m * s + k]
        out[:, :, i, j, m] = np.einsum("nclhw,oclhw->no", patch, weight)
    if bias is not None:
        out += bias.reshape(1, o, 1, 1, 1)
    return out


POOLS = [
    ("MAX", 2, 2, 2, 2, 0),  # C3D's pool2..pool5
    ("MAX", 2, 1, 2, 1, 0),  # C3D's pool1: frames kept
    ("MAX", 3, 2, 2, 1, 0),
    ("AVE", 3, 2, 2, 2, 1),  # padded AVE: divisors clipped to size + pad
    ("AVE", 7, 1, 1, 1, 0),  # the ResNet-18 pool5 form (whole map)
]


@pytest.mark.parametrize(("pool", "k", "kd", "s", "ts", "pad"), POOLS)
def test_pooling3d(layer_check, pool, k, kd, s, ts, pad):
    shape = (2, 3, 5, 7, 7) if k == 7 else SHAPE
    body = (
        f'layer {{ name: "p" type: "Pooling3D" bottom: "data" top: "p" pooling3d_param {{ '
        f"pool: {pool} kernel_size: {k} kernel_depth: {kd} stride: {s} temporal_stride: {ts} "
        f"pad: {pad} }} }}"
    )
    layer_check(
        video_net(body, shape),
        lambda i, w: {"p": pool3d_loops(i["data"].astype(np.float64), pool, k, kd, s, ts, pad)},
        opencv=False,
    )


CONVS = [
    (4, 3, 3, 1, 1, 1, 1, True),  # C3D's conv layers
    (4, 7, 3, 3, 1, 2, 1, False),  # the ResNet-18 conv1 form
    (2, 1, 1, 0, 0, 2, 2, False),  # a projection shortcut
    (3, 2, 3, 0, 2, 1, 2, True),
]


@pytest.mark.parametrize(("o", "k", "kd", "pad", "tpad", "s", "ts", "bias"), CONVS)
def test_convolution3d(layer_check, o, k, kd, pad, tpad, s, ts, bias):
    body = (
        f'layer {{ name: "c" type: "Convolution3D" bottom: "data" top: "c" convolution3d_param '
        f"{{ num_output: {o} kernel_size: {k} kernel_depth: {kd} pad: {pad} "
        f"temporal_pad: {tpad} stride: {s} temporal_stride: {ts} "
        f"bias_term: {'true' if bias else 'false'} }} }}"
    )

    def expected(inputs, weights):
        blobs = weights["c"]
        assert blobs[0].shape == (o, SHAPE[1], kd, k, k)
        assert not bias or blobs[1].shape == (1, 1, 1, 1, o)  # C3D's bias blob
        b = np.asarray(blobs[1], np.float64) if bias else None
        x = inputs["data"].astype(np.float64)
        return {"c": conv3d_loops(x, np.asarray(blobs[0], np.float64), b, pad, tpad, s, ts)}

    layer_check(video_net(body), expected, opencv=False)


def test_c3d_block(layer_check):
    """Convolution3D, ReLU and Pooling3D chained as C3D's layer groups are."""
    body = (
        'layer { name: "c" type: "Convolution3D" bottom: "data" top: "c" convolution3d_param { '
        "num_output: 4 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1 } }\n"
        'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }\n'
        'layer { name: "p" type: "Pooling3D" bottom: "c" top: "p" pooling3d_param { '
        "pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 temporal_stride: 2 } }"
    )
    layer_check(video_net(body), opencv=False)


@pytest.mark.skipif(opencv_caffe_available() is not None, reason="OpenCV 4 is not installed")
def test_opencv_has_no_c3d_layers(tmp_path):
    import cv2

    for layer in (
        'layer { name: "p" type: "Pooling3D" bottom: "data" top: "p" pooling3d_param { '
        "kernel_size: 2 kernel_depth: 2 } }",
        'layer { name: "c" type: "Convolution3D" bottom: "data" top: "c" convolution3d_param { '
        "num_output: 2 kernel_size: 1 kernel_depth: 1 } }",
    ):
        path = tmp_path / "net.prototxt"
        path.write_text(video_net(layer))
        with pytest.raises(cv2.error):
            cv2.dnn.readNetFromCaffe(str(path)).forward()


RECORDED = Path(__file__).parents[1] / "reference" / "data" / "volume" / "conv3d.npz"
CAFFE_CASES = {  # tests/reference/data/volume/record.py: (O, kd, k, tpad, pad, ts, s)
    "c3d": (4, 3, 3, 1, 1, 1, 1),
    "resnet_conv1": (2, 3, 7, 1, 3, 1, 2),
    "strided": (3, 2, 3, 0, 1, 2, 2),
}


@pytest.mark.parametrize("case", sorted(CAFFE_CASES))
def test_convolution3d_matches_real_caffe(layer_check, case):
    """PyTorch and ONNX Runtime against real BVLC Caffe's N-D Convolution on the same clips and
    weights (the bias in C3D's 1 x 1 x 1 x 1 x O blob)."""
    rec = {k.split("/", 1)[1]: v for k, v in np.load(RECORDED).items() if k.startswith(case)}
    o, kd, k, tpad, pad, ts, s = CAFFE_CASES[case]
    body = (
        f'layer {{ name: "c" type: "Convolution3D" bottom: "data" top: "c" convolution3d_param '
        f"{{ num_output: {o} kernel_size: {k} kernel_depth: {kd} pad: {pad} "
        f"temporal_pad: {tpad} stride: {s} temporal_stride: {ts} }} }}"
    )
    layer_check(
        video_net(body, rec["data"].shape),
        lambda i, w: {"c": rec["top"]},
        feeds=lambda n: {"data": rec["data"]},
        blobs={"c": [rec["weight"], rec["bias"].reshape(1, 1, 1, 1, o)]},
        dynamic=False,
        opencv=False,
    )


def test_convolution3d_module_binds_c3d_shaped_blobs(tmp_path):
    """Training binds Caffe's blobs into the module: the bias is C3D's 1 x 1 x 1 x 1 x O blob,
    and its gradient comes back in that shape."""
    import torch

    from caffe_compat.converters.torch._base import TorchContext, bind_blobs
    from caffe_compat.ir.load import load_net
    from caffe_compat.registry import lookup

    path = tmp_path / "c.prototxt"
    path.write_text(
        video_net(
            'layer { name: "c" type: "Convolution3D" bottom: "data" top: "c" '
            "convolution3d_param { num_output: 2 kernel_size: 3 kernel_depth: 3 pad: 1 "
            "temporal_pad: 1 } }"
        )
    )
    graph = load_net(path).graph
    node = graph.node("c")
    rng = np.random.default_rng(0)
    node.blobs = [rng.standard_normal((2, 3, 3, 3, 3)), np.zeros((1, 1, 1, 1, 2))]
    module = lookup("Convolution3D", "torch").fn(node, TorchContext(graph, node))
    weight = torch.nn.Parameter(torch.tensor(node.blobs[0], dtype=torch.float32))
    bias = torch.nn.Parameter(torch.tensor([[[[[1.0, -1.0]]]]]))
    bind_blobs(module, [weight, bias])
    x = torch.zeros(SHAPE)
    y = module(x)
    assert torch.equal(y[:, 0], torch.ones_like(y[:, 0]))  # zero input: the bias alone
    y.sum().backward()
    assert bias.grad is not None and bias.grad.shape == (1, 1, 1, 1, 2)
    assert float(bias.grad[0, 0, 0, 0, 0]) == y[:, 0].numel()
