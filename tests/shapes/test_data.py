"""The data family's facts: which tops of Input and data layers become net inputs, and their
shapes as Caffe's layers set them up (values worked out by hand from the layer sources)."""

from __future__ import annotations

import pytest

from caffe_compat import registry
from caffe_compat.errors import NetDefinitionError
from caffe_compat.io.prototxt import parse_text
from caffe_compat.proto import caffe_pb2


def layer(text: str) -> caffe_pb2.LayerParameter:
    net = caffe_pb2.NetParameter()
    parse_text(f"layer {{ {text} }}", net)
    return net.layer[0]


def shapes(text: str) -> list:
    found = layer(text)
    return registry.facts(found.type).data_shape(found, [])


def test_input_gives_one_shape_for_all_tops_or_one_each():
    assert registry.role("Input") == "input"
    one = 'name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } }'
    assert shapes(one) == [(2, 3), (2, 3)]
    each = (
        'name: "in" type: "Input" top: "a" top: "b" '
        "input_param { shape { dim: 1 } shape { dim: 4 dim: 5 } }"
    )
    assert shapes(each) == [(1,), (4, 5)]
    assert shapes('name: "in" type: "Input" top: "a"') == [None]
    with pytest.raises(NetDefinitionError, match="2 tops but 3 input shapes"):
        shapes(
            'name: "in" type: "Input" top: "a" top: "b" '
            "input_param { shape { dim: 1 } shape { dim: 2 } shape { dim: 3 } }"
        )


def test_a_data_layer_is_its_batch_of_crops_and_its_label_no_input():
    assert registry.role("Data") == "data"
    text = (
        'name: "d" type: "Data" top: "data" top: "label" '
        "transform_param { crop_size: 227 } data_param { batch_size: 50 }"
    )
    assert shapes(text) == [(50, 3, 227, 227), None]
    gray = (
        'name: "d" type: "ImageData" top: "data" top: "label" '
        "image_data_param { batch_size: 8 new_height: 32 new_width: 24 is_color: false }"
    )
    assert shapes(gray) == [(8, 1, 32, 24), None]
    assert shapes('name: "d" type: "Data" top: "data" top: "label"') == [None, None]


def test_memory_and_dummy_data_say_their_shapes():
    memory = (
        'name: "m" type: "MemoryData" top: "data" top: "label" '
        "memory_data_param { batch_size: 4 channels: 3 height: 5 width: 6 }"
    )
    assert shapes(memory) == [(4, 3, 5, 6), None]
    dummy = (
        'name: "d" type: "DummyData" top: "a" top: "b" '
        "dummy_data_param { num: 2 channels: 3 channels: 1 height: 4 width: 4 }"
    )
    assert shapes(dummy) == [(2, 3, 4, 4), (2, 1, 4, 4)]
    with pytest.raises(NetDefinitionError, match="not both"):
        shapes(
            'name: "d" type: "DummyData" top: "a" '
            "dummy_data_param { shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1 }"
        )


def test_training_layers_drop_out():
    for kind in ("SoftmaxWithLoss", "Accuracy", "Silence"):
        assert registry.role(kind) == "training"


@pytest.mark.parametrize(
    ("params", "shape"),
    [
        ("batch_size: 4 new_height: 360 new_width: 480", (4, 3, 360, 480)),
        (
            "batch_size: 2 crop_height: 64 crop_width: 96 new_height: 360 new_width: 480",
            (2, 3, 64, 96),
        ),
        ("new_height: 8 new_width: 6 is_color: false", (1, 1, 8, 6)),
    ],
)
def test_segnet_dense_image_data_shapes_its_input(tmp_path, params, shape):
    """caffe-segnet's DenseImageData (docs/forks.md): the crop, else the resized image size."""
    from caffe_compat.ir.load import load_net

    path = tmp_path / "n.prototxt"
    path.write_text(
        'layer { name: "data" type: "DenseImageData" top: "data" top: "label" '
        f'dense_image_data_param {{ source: "list.txt" {params} }} }}\n'
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
    )
    assert load_net(path).graph.inputs == {"data": shape}


def test_deeplab_v2_test_nets_feed_from_image_seg_data(tmp_path):
    """DeepLab v2's ImageSegData pads to crop_size: batch x 3 x crop x crop, its label and
    image-size tops no inputs; SegAccuracy and MatWrite (scoring, .mat files) drop out."""
    from caffe_compat.ir.load import load_net

    assert registry.role("SegAccuracy") == registry.role("MatWrite") == "training"
    text = (
        'name: "data" type: "ImageSegData" top: "data" top: "label" top: "data_dim" '
        "transform_param { crop_size: 65 } image_data_param { batch_size: 2 }"
    )
    assert shapes(text) == [(2, 3, 65, 65), None, None]
    path = tmp_path / "test.prototxt"
    path.write_text(
        f"layer {{ {text} }}\n"
        'layer { name: "fc8" type: "Convolution" bottom: "data" top: "fc8" '
        "convolution_param { num_output: 21 kernel_size: 1 } }\n"
        'layer { name: "acc" type: "SegAccuracy" bottom: "fc8" bottom: "label" top: "acc" }\n'
        'layer { name: "mat" type: "MatWrite" bottom: "fc8" bottom: "data_dim" }\n'
    )
    graph = load_net(path).graph
    assert dict(graph.inputs) == {"data": (2, 3, 65, 65)}
    assert [n.type for n in graph.nodes] == ["Convolution"]
