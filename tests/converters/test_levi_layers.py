"""The layers of the Levi-Hassner nets, one small net each, against OpenCV 4's Caffe reader."""

from __future__ import annotations

import pytest

INPUT = 'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: {c} dim: {h} dim: {w} }} }} }}\n'


def net(body: str, c: int = 5, h: int = 7, w: int = 9) -> str:
    return INPUT.format(c=c, h=h, w=w) + body


@pytest.mark.parametrize(
    "conv",
    [
        "num_output: 4 kernel_size: 3",
        "num_output: 6 kernel_size: 3 stride: 2 pad: 1",
        "num_output: 4 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
        "num_output: 4 kernel_size: 3 dilation: 2 pad: 2 bias_term: false",
    ],
)
def test_convolution(layer_parity, conv):
    layer_parity(
        net(
            f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ {conv} }} }}'
        )
    )


def test_grouped_convolution(layer_parity):
    layer_parity(
        net(
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 6 kernel_size: 3 group: 3 pad: 1 } }",
            c=6,
        )
    )


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


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn(layer_parity, size, region):
    layer_parity(
        net(
            f'layer {{ name: "n" type: "LRN" bottom: "data" top: "n" lrn_param {{ local_size: {size} '
            f"alpha: 0.5 beta: 0.75 norm_region: {region} }} }}"
        )
    )


def test_inner_product_relu_dropout_softmax(layer_parity):
    layer_parity(
        net(
            'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 7 } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "fc" top: "fc" relu_param { negative_slope: 0.1 } }\n'
            'layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" }\n'
            'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }'
        )
    )


def test_split_concat_flatten(layer_parity):
    layer_parity(
        net(
            'layer { name: "split" type: "Split" bottom: "data" top: "a" top: "b" }\n'
            'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }\n'
            'layer { name: "flat" type: "Flatten" bottom: "cat" top: "flat" }'
        )
    )
