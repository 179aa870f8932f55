"""The zoo prototxts: generated, faithful to the published architectures, and loadable."""

from __future__ import annotations

import math

import pytest
from nets import _zoo, make_prototxts

from caffe_compat.ir.load import load_net

# Learned parameters as published (BatchNorm statistics excluded; Caffe keeps them as blobs).
PUBLISHED_PARAMETERS = {
    "caffenet": 60_965_224,  # BVLC reference CaffeNet
    "googlenet": 6_998_552,  # BVLC GoogLeNet without the two training-only auxiliary heads
    "vgg16": 138_357_544,  # VGG-16 (Simonyan & Zisserman)
    "resnet50": 25_557_032 + 64,  # ResNet-50; the Caffe release's conv1 also has a bias
    "squeezenet11": 1_235_496,  # SqueezeNet 1.1
    "mobilenet_v1": 4_231_976,  # MobileNet v1 1.0-224 (conv weights, BN gamma/beta, classifier)
    # DEX: VGG-16 with its 4096 x 1000 classifier replaced by 4096 x 101 and 4096 x 2.
    "dex_age": 138_357_544 - (4096 * 1000 + 1000) + (4096 * 101 + 101),
    "dex_gender": 138_357_544 - (4096 * 1000 + 1000) + (4096 * 2 + 2),
    # FCN-8s: VGG-16 convolutions, fc6/fc7 as 7x7 and 1x1 convolutions, three 21-class scorers,
    # and bias-free 21 -> 21 deconvolutions of kernels 4, 4 and 16.
    "fcn8s": 14_714_688
    + (512 * 49 * 4096 + 4096)
    + (4096 * 4096 + 4096)
    + (4096 * 21 + 21)
    + (512 * 21 + 21)
    + (256 * 21 + 21)
    + 21 * 21 * (4 * 4 + 4 * 4 + 16 * 16),
}
OUTPUTS = {
    "caffenet": (1, 1000),
    "googlenet": (1, 1000),
    "vgg16": (1, 1000),
    "resnet50": (1, 1000),
    "squeezenet11": (1, 1000, 1, 1),
    "mobilenet_v1": (1, 1000, 1, 1),
    "dex_age": (1, 101),
    "dex_gender": (1, 2),
    "fcn8s": (1, 21, 500, 500),
}


@pytest.mark.parametrize("name", _zoo.NAMES)
def test_data_file_is_what_the_generator_writes(name):
    path = _zoo.DATA / f"{name}.prototxt"
    assert path.read_text(encoding="utf-8") == make_prototxts.render(name), (
        f"{path} differs from tests/nets/make_prototxts.py; run it"
    )


@pytest.mark.parametrize("name", _zoo.NAMES)
def test_parameter_count_and_output_match_the_published_net(name):
    loaded = load_net(_zoo.DATA / f"{name}.prototxt")
    graph = loaded.graph
    learned = sum(
        math.prod(shape)
        for node in graph.nodes
        if node.type != "BatchNorm"
        for shape in loaded.inference.params.get(node.name, [])
    )
    assert learned == PUBLISHED_PARAMETERS[name]
    assert [graph.shapes[v] for v in graph.outputs] == [OUTPUTS[name]]
    assert list(graph.inputs) == ["data"]


def test_signature_layers_of_each_architecture():
    def nodes(name):
        return load_net(_zoo.DATA / f"{name}.prototxt").graph.nodes

    caffenet = {n.name: n for n in nodes("caffenet")}
    assert [caffenet[c].param.convolution_param.group for c in ("conv2", "conv4", "conv5")] == [
        2,
        2,
        2,
    ]
    resnet = nodes("resnet50")
    assert sum(n.type == "Eltwise" for n in resnet) == 16
    assert all(n.param.batch_norm_param.use_global_stats for n in resnet if n.type == "BatchNorm")
    mobile = [
        n for n in nodes("mobilenet_v1") if n.type == "Convolution" and n.name.endswith("/dw")
    ]
    assert len(mobile) == 13
    assert all(
        n.param.convolution_param.group == n.param.convolution_param.num_output for n in mobile
    )
    fcn = {n.name: n for n in nodes("fcn8s")}
    assert fcn["conv1_1"].param.convolution_param.pad == [100]
    assert [
        fcn[c].param.crop_param.offset[0] for c in ("score_pool4c", "score_pool3c", "score")
    ] == [
        5,
        9,
        31,
    ]
    assert sum(n.type == "Concat" for n in nodes("googlenet")) == 9
    assert sum(n.name.endswith("/concat") for n in nodes("squeezenet11")) == 8
