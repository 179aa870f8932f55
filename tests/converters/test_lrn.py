"""LRN across and within channels, local_size 1, 3 and 5, against OpenCV 4."""

from __future__ import annotations

import pytest
from _harness import net


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn(layer_parity, size, region):
    layer_parity(
        net(
            f'layer {{ name: "n" type: "LRN" bottom: "data" top: "n" lrn_param {{ local_size: {size} '
            f"alpha: 0.5 beta: 0.75 norm_region: {region} }} }}"
        )
    )
