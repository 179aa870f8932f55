"""The zoo's deploy prototxts: generated, identical in layers to the released deploy files, and
sized as the cards say. (Weights in the released shapes loading into them and running: see
test_zoo_pretrained.py.)"""

from __future__ import annotations

import math

import pytest
from nets import make_zoo_prototxts
from nets.fingerprint import fingerprint

from caffe_compat.ir.load import load_net
from caffe_compat.zoo import list_models, load_card

# fingerprint.py run on each released deploy file: (layers, SHA-256). Sources:
#   BVLC/caffe 9b891540183ddc834a02b2bd81b31afae71b2153 models/<name>/deploy.prototxt;
#   yahoo/open_nsfw a4e13931465f4380742545932657eeea0a10aa48 nsfw_model/deploy.prototxt;
#   forresti/SqueezeNet (DeepScale) 51147dc0681638c28aad593b9e923f3500117125
#     SqueezeNet_v1.1/deploy.prototxt;
#   KaimingHe/deep-residual-networks a7026cb prototxt/ResNet-50-deploy.prototxt;
#   opencv/opencv samples/dnn/face_detector/deploy.prototxt as changed by opencv/opencv#14938
#     (confidence_threshold 0.2; its OpenCV-only `clip: 1` is not part of caffe.proto).
RELEASED = {
    "bvlc_alexnet": (23, "4007351565e2fff293a3c643a08bf71737a4a2e06aa6146828e4aa7f55b73ca8"),
    "bvlc_reference_caffenet": (
        23,
        "81d76e1776bd7845b80525f5627d4eed3585b9afa52191de5888fa87c8e321bd",
    ),
    "bvlc_googlenet": (142, "1e351a63c568ac32f013a132470d2c9bedce8ed13b7f98f5f2ce2569488711a0"),
    "bvlc_reference_rcnn_ilsvrc13": (
        22,
        "db5094b5cdbee46352d2f837672bbc48cd07dd4e9c12d94fb9c2a5f3b36024f5",
    ),
    "finetune_flickr_style": (
        23,
        "614c031dbcb4a85540f1dea38bdc0641fa54088fdc40abc44bf5f651bda86556",
    ),
    "res10_300x300_ssd": (112, "f3a63affbf835d8c05aa8d73cc80bd4296aaa34c91be57b34a49cec5143e9f82"),
    "open_nsfw": (228, "bda643112d62d23f3d2a861dd2d3bf92a9735cc9cd849752db0bad972aa6acbe"),
    "squeezenet_v1_1": (66, "4c8863a4999fa4f41d2e4b2e33ad7933c68d0161f0152cb4cfb4c045d85ca42a"),
    "resnet_50": (228, "65046d6de7d0ca56b49f9acfe08fef7120ce111984fbd4c6e0bc10a3077621e2"),
}
# The VGG-16 deploy lives in a gist (no repository snapshot to fingerprint); its layer names are
# those of tests/nets/make_prototxts.py's vgg16, whose parameter count tests/nets checks.
GENERATED = sorted(make_zoo_prototxts.NETS)
# Learned parameters of the released nets (BatchNorm statistics included: Caffe stores them).
CAFFENET = 60_965_224  # AlexNet and CaffeNet: the same layers, pooling and LRN swapped
PARAMETERS = {
    "bvlc_alexnet": CAFFENET,
    "bvlc_reference_caffenet": CAFFENET,
    "bvlc_reference_rcnn_ilsvrc13": CAFFENET - (4096 * 1000 + 1000) + (4096 * 200 + 200),
    "finetune_flickr_style": CAFFENET - (4096 * 1000 + 1000) + (4096 * 20 + 20),
    "bvlc_googlenet": 6_998_552,
    "squeezenet_v1_1": 1_235_496,
    "vgg_ilsvrc_16": 138_357_544,
}


def test_every_card_with_a_generated_prototxt_is_in_the_generator():
    assert set(GENERATED) <= set(list_models())
    assert set(RELEASED) | {"vgg_ilsvrc_16"} == set(GENERATED)


@pytest.mark.parametrize("name", GENERATED)
def test_zoo_file_is_what_the_generator_writes(name):
    path = load_card(name).prototxt_path()
    assert path.read_text(encoding="utf-8") == make_zoo_prototxts.render(name), (
        f"{path} differs from tests/nets/make_zoo_prototxts.py; run it"
    )


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_layers_equal_the_released_deploy(name):
    assert fingerprint(load_card(name).prototxt_path()) == RELEASED[name]


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts_of_the_released_nets(name):
    loaded = load_net(load_card(name).prototxt_path())
    count = sum(math.prod(s) for shapes in loaded.inference.params.values() for s in shapes)
    assert count == PARAMETERS[name]


@pytest.mark.parametrize("name", list_models())
def test_every_card_builds_to_its_documented_shapes(name):
    card = load_card(name)
    loaded = load_net(card.prototxt_path())
    graph = loaded.graph
    assert graph.inputs == {card.input.blob: (1, *card.input.shape)}
    (output,) = graph.outputs
    assert graph.blob_of[output] == card.output
    shape = graph.shapes[output]
    if card.task == "classification":
        assert shape[:2] == (1, len(card.labels)) and all(d == 1 for d in shape[2:])
    else:
        (detector,) = [n for n in graph.nodes if n.type == "DetectionOutput"]
        assert detector.param.detection_output_param.num_classes == len(card.labels)
        assert shape[:2] == (1, 1) and shape[3] == 7
