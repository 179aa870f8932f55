"""SPP in the float64 reference: pyramids worked out by hand from spp_layer.cpp's pooling
parameters (kernel ceil(size / bins), stride = kernel, pad (kernel * bins - size + 1) / 2)."""

from __future__ import annotations

import numpy as np
import pytest


def spp(height: int, pool: str) -> str:
    return (
        f'layer {{ name: "s" type: "SPP" bottom: "data" top: "s" spp_param {{ '
        f"pyramid_height: {height} pool: {pool} }} }}"
    )


@pytest.mark.parametrize(
    "pool, expected",
    [
        ("MAX", [15, 5, 7, 13, 15]),  # the whole map, then four 2 x 2 bins
        ("AVE", [7.5, 2.5, 4.5, 10.5, 12.5]),
    ],
)
def test_even_map(run_layers, pool, expected):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(run_layers(spp(2, pool), data=x)["s"], [expected])


@pytest.mark.parametrize(
    "pool, expected",
    [
        # level 1 on 3 x 3: kernel 2, pad 1: bins cover row/column 0, then 1..2
        ("MAX", [8, 0, 2, 6, 8]),
        # AVE divides by the window with its padding (2 x 2 = 4), as Caffe's Pooling does
        ("AVE", [4, 0, 0.75, 2.25, 6]),
    ],
)
def test_odd_map_pads_the_bins(run_layers, pool, expected):
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    np.testing.assert_allclose(run_layers(spp(2, pool), data=x)["s"], [expected])


def test_one_level_keeps_four_axes(run_layers):
    x = np.arange(18, dtype=np.float64).reshape(1, 2, 3, 3)
    out = run_layers(spp(1, "MAX"), data=x)["s"]
    np.testing.assert_array_equal(out, [[[[8]], [[17]]]])


def test_map_too_small_for_the_pyramid_is_refused(run_layers):
    from caffe_compat.errors import CaffeCompatError

    with pytest.raises(CaffeCompatError, match="too small"):
        run_layers(spp(3, "MAX"), data=np.zeros((1, 1, 2, 2)))


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_spp_backward(grad_check, pool):
    x = np.random.default_rng(3).permutation(2 * 5 * 6).reshape(1, 2, 5, 6) / 7.0
    grad_check(spp(2, pool), data=x, step=1e-3)
