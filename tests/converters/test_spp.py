"""SPP (BVLC Caffe's spatial pyramid pooling): PyTorch, ONNX Runtime and the float64 reference
against a per-bin loop written here from spp_layer.cpp and Caffe's pooling windows. OpenCV 4's
Caffe reader has no SPP layer (checked below), so it is not a judge here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _harness import net, uniform

from caffe_compat.verify.opencv import opencv_caffe_available


def spp_loops(x: np.ndarray, height: int, pool: str) -> np.ndarray:
    n, c, h, w = x.shape
    levels = []
    for level in range(height):
        bins = 2**level
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        oh = math.ceil((h + 2 * ph - kh) / kh) + 1
        ow = math.ceil((w + 2 * pw - kw) / kw) + 1
        oh -= (oh - 1) * kh >= h + ph
        ow -= (ow - 1) * kw >= w + pw
        out = np.zeros((n, c, oh, ow))
        for i in range(oh):
            for j in range(ow):
                h0, w0 = i * kh - ph, j * kw - pw
                h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
                area = (h1 - h0) * (w1 - w0)
                window = x[:, :, max(h0, 0) : min(h1, h), max(w0, 0) : min(w1, w)]
                if pool == "MAX":
                    out[:, :, i, j] = window.max(axis=(2, 3))
                else:
                    out[:, :, i, j] = window.sum(axis=(2, 3)) / area
        levels.append(out)
    if height == 1:
        return levels[0]
    return np.concatenate([lv.reshape(n, -1) for lv in levels], axis=1)


@pytest.mark.parametrize("height", [1, 2, 3])
@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_spp(layer_check, height, pool):
    prototxt = net(
        f'layer {{ name: "s" type: "SPP" bottom: "data" top: "s" spp_param {{ '
        f"pyramid_height: {height} pool: {pool} }} }}"
    )  # 5 x 7 x 9 maps: odd sizes pad the bins
    layer_check(
        prototxt,
        lambda i, w: {"s": spp_loops(i["data"].astype(np.float64), height, pool)},
        feeds=uniform(-3, 3),
        opencv=False,
    )


@pytest.mark.skipif(opencv_caffe_available() is not None, reason="OpenCV 4 is not installed")
def test_opencv_has_no_spp_layer(tmp_path):
    import cv2

    path = tmp_path / "spp.prototxt"
    path.write_text(
        net(
            'layer { name: "s" type: "SPP" bottom: "data" top: "s" spp_param { pyramid_height: 2 } }'
        )
    )
    with pytest.raises(cv2.error):
        cv2.dnn.readNetFromCaffe(str(path)).forward()
