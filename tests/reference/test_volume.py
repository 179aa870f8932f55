"""C3D's Convolution3D and Pooling3D in the float64 reference, against values worked out by hand
from convolution3d_layer.cpp (vol2col + GEMM: output sizes rounded down, weights O x C x kd x k x
k, bias 1 x 1 x 1 x 1 x O) and pool3d_layer.cpp (H, W rounded up with pad, L rounded up without,
windows clipped to the input, AVE over the window clipped to size + pad, MAX backward to every
element equal to the window's maximum), their backward against central differences, and
Convolution3D against real BVLC Caffe's N-D Convolution on 5-D clips (recorded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def pool3d(pool: str, k: int, kd: int, s: int = 1, ts: int = 1, pad: int = 0) -> str:
    return (
        f'layer {{ name: "p" type: "Pooling3D" bottom: "data" top: "p" pooling3d_param {{ '
        f"pool: {pool} kernel_size: {k} kernel_depth: {kd} stride: {s} temporal_stride: {ts} "
        f"pad: {pad} }} }}"
    )


def conv3d(o: int, k: int, kd: int, *, pad=0, tpad=0, s=1, ts=1, bias=True) -> str:
    return (
        f'layer {{ name: "c" type: "Convolution3D" bottom: "data" top: "c" convolution3d_param '
        f"{{ num_output: {o} kernel_size: {k} kernel_depth: {kd} pad: {pad} temporal_pad: {tpad} "
        f"stride: {s} temporal_stride: {ts} bias_term: {'true' if bias else 'false'} }} }}"
    )


def test_max_pool_rounds_up_and_clips_windows(run_layers):
    # L = 3, H = W = 3; kernel 2 x 2 x 2, stride 2: ceil(1 / 2) + 1 = 2 per axis, the last
    # window of each axis holds one index only (clipped), none dropped.
    x = np.arange(27, dtype=np.float64).reshape(1, 1, 3, 3, 3)
    y = run_layers(pool3d("MAX", 2, 2, s=2, ts=2), data=x)["p"]
    # value = 9 l + 3 h + w; each window's max is at its last index in every axis
    expected = [[[13, 14], [16, 17]], [[22, 23], [25, 26]]]
    np.testing.assert_array_equal(y, [[expected]])


def test_ave_pool_divides_by_the_window_clipped_to_size_plus_pad(run_layers):
    # L = 2 (kernel_depth 1: every frame alone), H = W = 2, kernel 2, stride 2, pad 1:
    # H out = ceil((2 + 2 - 2) / 2) + 1 = 2. Window (0, 0) covers rows -1..0: clipped to
    # [-1, 3) it stays 2 x 2 = 4, one element inside; window (1, 1) covers rows 1..2: clipped
    # to size + pad = 3 it is 2 x 2 again, one element inside.
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]).reshape(1, 1, 2, 2, 2)
    y = run_layers(pool3d("AVE", 2, 1, s=2, ts=1, pad=1), data=x)["p"]
    expected = [[[1 / 4, 2 / 4], [3 / 4, 4 / 4]], [[10 / 4, 20 / 4], [30 / 4, 40 / 4]]]
    np.testing.assert_allclose(y, [[expected]])


def test_ave_pool_temporal_window_is_clipped_without_padding(run_layers):
    # L = 3, kernel_depth 2, temporal_stride 2: windows [0, 2) and [2, 3): the second divides
    # by 1 frame (C3D clips lend to the length before computing pool_size).
    x = np.array([1.0, 3.0, 8.0]).reshape(1, 1, 3, 1, 1)
    y = run_layers(pool3d("AVE", 1, 2, s=1, ts=2), data=x)["p"]
    np.testing.assert_allclose(y.ravel(), [2.0, 8.0])


def test_sport1m_pool5_shape(run_layers):
    # C3D's Sports-1M pool5: conv5b 2 x 7 x 7, kernel 2 x 2 x 2, stride 2 -> 1 x 4 x 4 (fc6: 8192)
    x = np.random.default_rng(0).standard_normal((1, 2, 2, 7, 7))
    y = run_layers(pool3d("MAX", 2, 2, s=2, ts=2), data=x)["p"]
    assert y.shape == (1, 2, 1, 4, 4)
    np.testing.assert_array_equal(y[0, :, 0, 3, 3], x[0, :, :, 6, 6].max(axis=1))


def test_convolution3d_by_hand(run_layers):
    # One 2 x 2 x 2 kernel over a 3 x 2 x 2 clip (no pad): L out = 2, H = W = 1.
    x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 2, 2)
    w = np.array([1.0, 0, 0, 0, 0, 0, 0, -2]).reshape(1, 1, 2, 2, 2)  # x[l,0,0] - 2 x[l+1,1,1]
    b = np.array([0.5]).reshape(1, 1, 1, 1, 1)  # C3D's bias blob shape
    y = run_layers(conv3d(1, 2, 2), weights={"c": [w, b]}, data=x)["c"]
    np.testing.assert_allclose(y.ravel(), [0 - 2 * 7 + 0.5, 4 - 2 * 11 + 0.5])


def test_convolution3d_pads_and_strides_per_axis(run_layers):
    # temporal_pad 1, pad 0, temporal_stride 2, stride 1, a 1 x 1 x 1 input of value 3: only the
    # kernel's middle frame meets it (the others read the temporal padding).
    x = np.full((1, 1, 1, 1, 1), 3.0)
    w = np.array([10.0, 100.0, 1000.0]).reshape(1, 1, 3, 1, 1)
    y = run_layers(conv3d(1, 1, 3, tpad=1, ts=2, bias=False), weights={"c": [w]}, data=x)["c"]
    np.testing.assert_allclose(y.ravel(), [300.0])


def test_max_pool_backward_gives_every_tied_maximum_the_diff(build):
    from caffe_compat.reference.backward import forward_backward

    from .conftest import inputs_layer

    # BVLC's Pooling sends a tie to the first maximum; C3D compares every element with the top.
    x = np.array([5.0, 5.0, 1.0, 5.0]).reshape(1, 1, 1, 2, 2)
    layer = pool3d("MAX", 2, 1, s=2).replace('top: "p"', 'top: "p" loss_weight: 1')
    graph = build(inputs_layer(data=x) + layer)
    result = forward_backward(graph, {"data": x}, force_backward=True)
    np.testing.assert_array_equal(result.diff("data").ravel(), [1.0, 1.0, 0.0, 1.0])


@pytest.mark.parametrize(
    "layer",
    [
        pool3d("AVE", 2, 2, s=2, ts=1, pad=1),
        pool3d("MAX", 2, 2, s=1, ts=2),
        conv3d(2, 2, 2, pad=1, tpad=1, s=2, ts=1),
    ],
)
def test_backward_matches_central_differences(grad_check, layer):
    rng = np.random.default_rng(3)
    weights = None
    if "Convolution3D" in layer:
        weights = {
            "c": [rng.standard_normal((2, 2, 2, 2, 2)), rng.standard_normal((1, 1, 1, 1, 2))]
        }
    grad_check(layer, weights, data=rng.standard_normal((2, 2, 3, 4, 5)))


RECORDED = Path(__file__).parent / "data" / "volume" / "conv3d.npz"
CASES = {  # as data/volume/record.py ran BVLC's N-D Convolution: (O, kd, k, tpad, pad, ts, s)
    "c3d": (4, 3, 3, 1, 1, 1, 1),
    "resnet_conv1": (2, 3, 7, 1, 3, 1, 2),
    "strided": (3, 2, 3, 0, 1, 2, 2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_convolution3d_matches_real_caffe(build, case):
    """Real BVLC Caffe's N-D Convolution on 5-D clips (recorded by data/volume/record.py), the
    computation C3D's vol2col + GEMM performs: the reference's forward and backward."""
    from caffe_compat import registry
    from caffe_compat.reference import forward
    from caffe_compat.reference._base import BackwardContext

    from .conftest import inputs_layer

    rec = {k.split("/", 1)[1]: v for k, v in np.load(RECORDED).items() if k.startswith(case)}
    o, kd, k, tpad, pad, ts, s = CASES[case]
    x = rec["data"].astype(np.float64)
    bias = rec["bias"].reshape(1, 1, 1, 1, o)
    layer = conv3d(o, k, kd, pad=pad, tpad=tpad, s=s, ts=ts)
    graph = build(inputs_layer(data=x) + layer, {"c": [rec["weight"], bias]})
    top = forward(graph, {"data": x}, outputs=["c"])["c"]
    np.testing.assert_allclose(top, rec["top"], rtol=1e-5, atol=1e-5 * np.abs(rec["top"]).max())
    node = graph.node("c")
    blobs = (rec["weight"].astype(np.float64), bias.astype(np.float64))
    ctx = BackwardContext(
        (x.shape,),
        (top.shape,),
        blobs,
        outputs=(top,),
        propagate=(True,),
        param_propagate=(True, True),
    )
    entry = registry.lookup("Convolution3D", "reference_backward")
    (dx,), (dw, db) = entry.fn(node, [x], [rec["top_diff"].astype(np.float64)], ctx)
    for mine, theirs in ((dx, rec["data_diff"]), (dw, rec["weight_diff"])):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
    assert db.shape == (1, 1, 1, 1, o)  # in the bias blob's shape
    np.testing.assert_allclose(db.ravel(), rec["bias_diff"], rtol=1e-5)
