"""Pooling against OpenCV 4: MAX and AVE, Caffe's ceil rounding, overhanging windows, non-square geometry."""

from __future__ import annotations

import pytest
from _harness import net


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize(
    "window",
    [
        "kernel_size: 3 stride: 2",  # ceil overhang without padding
        "kernel_size: 3 stride: 2 pad: 1",  # padding plus overhang
        "kernel_size: 2 stride: 2 pad: 1",  # last window starts in the padding: dropped
        "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1",
        "global_pooling: true",
    ],
)
def test_pooling(layer_parity, method, window):
    layer_parity(
        net(
            f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: {method} {window} }} }}'
        )
    )
