"""The zoo's deploy prototxts: generated, identical in layers to the released deploy files, sized
as the cards say, and able to take (synthesized) weights in the released shapes and run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nets import make_zoo_prototxts
from nets.fingerprint import fingerprint

from caffe_compat.converters.torch.model import to_torch
from caffe_compat.inputs import feeds_for
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.load import load_net
from caffe_compat.synth import synthesize
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
SMALL = ("squeezenet_v1_1", "res10_300x300_ssd", "open_nsfw", "bvlc_googlenet")


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


def _synthesized(name: str, folder, method: str) -> tuple[str, object]:
    """A caffemodel in the card's released shapes, written by caffe-compat's writer."""
    loaded = load_net(load_card(name).prototxt_path())
    path = folder / f"{name}.caffemodel"
    write_caffemodel(path, definitions_only(loaded.net.layer), synthesize(loaded, method=method))
    return str(path), loaded


def _loads_and_runs(name: str, folder, method: str) -> None:
    card = load_card(name)
    path, _ = _synthesized(name, folder, method)
    loaded = load_net(card.prototxt_path(), path)  # strict: every blob matched by name and shape
    model = to_torch(loaded.graph).eval()
    x = torch.from_numpy(feeds_for({card.input.blob: (2, *card.input.shape)}, 2, seed=1)["data"])
    with torch.no_grad():
        out = model(x).numpy()
    if card.task == "classification":
        assert np.isfinite(out).all()
        rows = out.reshape(2, -1)
        assert rows.shape == (2, len(card.labels))
        if card.output == "prob":
            np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=0, atol=1e-5)
    else:
        assert out.shape[:2] == (1, 1) and out.shape[3] == 7
        assert np.isfinite(out[..., :3]).all()  # box corners may overflow with random weights
        kept = out[0, 0][out[0, 0, :, 0] >= 0]
        assert set(kept[:, 0].tolist()) <= {0.0, 1.0}  # image ids of the batch of two
        assert set(kept[:, 1].tolist()) <= {1.0}  # only "face"; background is never reported
        assert (kept[:, 2] >= 0.2).all()


@pytest.mark.parametrize("name", SMALL)
def test_synthesized_weights_load_and_run(name, tmp_path):
    _loads_and_runs(name, tmp_path, "he")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in GENERATED if n not in SMALL])
def test_synthesized_weights_load_and_run_large(name, tmp_path):
    _loads_and_runs(name, tmp_path, "he")
