"""``caffe.coord_map``: the facts BVLC's test_coord_map.py checks, with offsets worked by hand.

A conv of kernel k, stride s, pad p maps output x to input ``s*x + (k-1)/2 - p`` (its window's
centre); 2x2 max pooling of stride 2 halves; a deconvolution of kernel 2s, stride s, pad q maps
``x_out = s*x_in + (2s-1)/2 - q``. Composing conv(3, 1, 0) -> pool 2 -> deconv(4, 2, 0) gives
``x_out = x_in`` (a = 1, b = 0); with pool 4 and deconv(8, 4) the shift is -1.
"""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat.pycaffe import TEST, Net
from caffe_compat.pycaffe import layers as L
from caffe_compat.pycaffe import params as P
from caffe_compat.pycaffe.coord_map import (
    AxisMismatchException,
    compose,
    coord_map_from_to,
    crop,
    inverse,
)
from caffe_compat.pycaffe.net_spec import NetSpec


def coord_net(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0) -> NetSpec:
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.aux = L.Input(shape=dict(dim=[2, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    deconv_ks = [s * 2 for s in dstride] if isinstance(dstride, list) else dstride * 2
    n.deconv = L.Deconvolution(
        n.pool, num_output=10, kernel_size=deconv_ks, stride=dstride, pad=dpad
    )
    return n


def test_conv_pool_deconv():
    n = coord_net()
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, 0)
    n = coord_net(pool=4, dstride=4)
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, -1)


def test_pass_through_and_1x1():
    n = coord_net()
    n.relu = L.ReLU(n.deconv)
    n.conv1x1 = L.Convolution(n.relu, num_output=10, kernel_size=1, stride=1, pad=0)
    for top in (n.relu, n.conv1x1):
        assert coord_map_from_to(top, n.data) == (1, 1, 0)


@pytest.mark.parametrize("pad", [0, 3, 7])
def test_padding_shifts(pad):
    n = coord_net(pad=pad)
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, -pad)  # conv padding subtracts
    n = coord_net(dpad=pad)
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, pad)  # deconv padding adds
    n = coord_net(pad=pad, dpad=pad)
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, 0)


def test_multi_bottom_layers_map_alike():
    n = coord_net()
    n.conv_data, n.conv_aux = L.Convolution(
        n.data, n.aux, ntop=2, num_output=10, kernel_size=5, stride=2, pad=0
    )
    first = coord_map_from_to(n.conv_data, n.data)
    assert first == coord_map_from_to(n.conv_aux, n.aux)
    assert first[0] == 1 and first[1] == 2 and first[2] == 2  # x_in = 2 x_out + (5-1)/2


def test_anisotropic_maps_are_their_isotropic_parts():
    n = coord_net(ks=3, stride=1, pad=0)
    ax3, a3, b3 = coord_map_from_to(n.deconv, n.data)
    m = coord_net(ks=5, stride=2, pad=10)
    ax5, a5, b5 = coord_map_from_to(m.deconv, m.data)
    r = coord_net(ks=[3, 5], stride=[1, 2], pad=[0, 10])
    axr, ar, br = coord_map_from_to(r.deconv, r.data)
    assert ax3 == ax5 == axr == 1
    assert (a3, b3) == (ar[0], br[0]) and (a5, b5) == (ar[1], br[1])
    # conv (5, 2, 10): x_in = 2 x + (5-1)/2 - 10; through pool and deconv: x_in = 2 x_out - 10
    assert (a5, b5) == (2, -10)


def test_nd_convolution():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 100, 100, 100]))
    n.conv = L.Convolution(
        n.data, num_output=10, kernel_size=[3, 3, 3], stride=[1, 1, 1], pad=[0, 1, 2]
    )
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2, pad=0)
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=4, stride=2, pad=0)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and len(a) == len(b) == 3 and np.all(a == 1)
    np.testing.assert_array_equal(b, [0, -1, -2])


@pytest.mark.parametrize("offset", [0, 4])
def test_crop_of_crop_adds_the_offset(offset):
    n = coord_net()
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=offset)
    assert coord_map_from_to(n.crop, n.data) == (1, 1, offset)


def test_crop_helper_writes_caffes_crop_layer(tmp_path):
    n = coord_net(pool=4, dstride=4)  # x_out = x_in - 1: crop offset 1
    top = crop(n.deconv, n.data)
    assert top.fn.type_name == "Crop" and top.fn.inputs == (n.deconv, n.data)
    assert top.fn.params == {"crop_param": {"axis": 2, "offset": [1]}}
    net = NetSpec()  # as a layer of a net (a Deconvolution's settings go in convolution_param)
    net.data = L.Input(shape=dict(dim=[1, 1, 8, 8]))
    net.pool = L.Pooling(net.data, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    up = dict(num_output=1, kernel_size=4, stride=2)  # x_out = 2 x_in + 1.5: offset 1
    net.up = L.Deconvolution(net.pool, convolution_param=up)
    net.crop = crop(net.up, net.data)
    layer = net.to_proto().layer[-1]
    assert layer.type == "Crop" and list(layer.bottom) == ["up", "data"]
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [1]
    (tmp_path / "fcn.prototxt").write_text(str(net.to_proto()))
    built = Net(str(tmp_path / "fcn.prototxt"), TEST)
    assert built.blobs["up"].shape == (1, 1, 10, 10) and built.blobs["crop"].shape == (1, 1, 8, 8)


def test_unconnected_tops_raise():
    n = coord_net()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match="Could not compute map"):
        coord_map_from_to(n.ip, n.data)


def test_scale_mismatch_and_negative_offsets_are_refused():
    n = coord_net(pool=3, dstride=2)
    with pytest.raises(AssertionError, match="scale mismatch"):
        crop(n.deconv, n.data)
    n = coord_net(dpad=10)
    with pytest.raises(AssertionError, match="negative offset"):
        crop(n.deconv, n.data)


def test_compose_and_inverse():
    assert compose((None, 1, 0), (2, 0.5, 1.0)) == (2, 0.5, 1.0)
    assert compose((1, 2, 1), (None, 3, 4)) == (1, 6, 9)
    assert inverse((1, 2, 1)) == (1, 0.5, -0.5)
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))
