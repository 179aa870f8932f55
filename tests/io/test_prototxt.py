"""Net definitions: V1 (enum types, blobs_lr/weight_decay), V2, every way to declare inputs, the
released Levi-Hassner files, the solver, and the line index behind error messages."""

from __future__ import annotations

import pytest

from caffe_compat.errors import NetDefinitionError, PrototxtError
from caffe_compat.io import load_prototxt, load_solver
from caffe_compat.io.prototxt import index_layers
from caffe_compat.io.upgrade import upgrade_net
from caffe_compat.ir.load import load_net
from caffe_compat.proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter

V1_TEXT = """
name: "old"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 11 input_dim: 13
layers {
  name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 4 kernel_size: 3 stride: 2
    weight_filler { type: "gaussian" std: 0.01 } }
}
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "pool" type: POOLING bottom: "conv" top: "pool" pooling_param { pool: AVE kernel_size: 2 } }
layers { name: "ip" type: INNER_PRODUCT bottom: "pool" top: "ip" blobs_lr: 10 inner_product_param { num_output: 6 } }
layers { name: "prob" type: SOFTMAX bottom: "ip" top: "prob" }
"""


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_v1_text_keeps_enum_types_until_upgraded(tmp_path):
    net, _ = load_prototxt(write(tmp_path, V1_TEXT))
    assert [layer.type for layer in net.layers] == [
        V1.CONVOLUTION,
        V1.RELU,
        V1.POOLING,
        V1.INNER_PRODUCT,
        V1.SOFTMAX,
    ]
    assert len(net.layer) == 0
    assert upgrade_net(net) is True
    assert len(net.layers) == 0
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("input", "Input"),
        ("conv", "Convolution"),
        ("relu", "ReLU"),
        ("pool", "Pooling"),
        ("ip", "InnerProduct"),
        ("prob", "Softmax"),
    ]


def test_blobs_lr_and_weight_decay_become_param_specs(tmp_path):
    net, _ = load_prototxt(write(tmp_path, V1_TEXT))
    upgrade_net(net)
    layers = {layer.name: layer for layer in net.layer}
    assert [(p.lr_mult, p.decay_mult) for p in layers["conv"].param] == [(1, 1), (2, 0)]
    ip = layers["ip"].param
    assert len(ip) == 1 and ip[0].lr_mult == 10 and not ip[0].HasField("decay_mult")
    assert not layers["relu"].param
    conv = layers["conv"].convolution_param
    assert (conv.num_output, list(conv.kernel_size), list(conv.stride)) == (4, [3], [2])
    assert conv.weight_filler.type == "gaussian"
    assert layers["pool"].pooling_param.pool == caffe_pb2.PoolingParameter.AVE


def test_v1_and_v2_texts_of_one_net_load_alike(tmp_path):
    v2_text = """
    name: "old"
    layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 11 dim: 13 } } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
            convolution_param { num_output: 4 kernel_size: 3 stride: 2 weight_filler { type: "gaussian" std: 0.01 } } }
    layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
    layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE kernel_size: 2 } }
    layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" param { lr_mult: 10 } inner_product_param { num_output: 6 } }
    layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
    """
    old = load_net(write(tmp_path, V1_TEXT, "v1.prototxt"))
    new = load_net(write(tmp_path, v2_text, "v2.prototxt"))
    assert (old.prototxt_format, new.prototxt_format) == ("V1", "V2")
    assert old.net == new.net
    assert old.inference.shapes == new.inference.shapes
    assert old.inference.shapes["prob"] == (2, 6)


INPUT_FORMS = {
    "input_dim": 'input: "data" input_dim: 2 input_dim: 3 input_dim: 11 input_dim: 13',
    "input_shape": 'input: "data" input_shape { dim: 2 dim: 3 dim: 11 dim: 13 }',
    "Input layer": 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 11 dim: 13 } } }',
}
BODY = 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 6 } }'


@pytest.mark.parametrize("form", INPUT_FORMS)
def test_every_input_form_gives_the_same_input(tmp_path, form):
    loaded = load_net(write(tmp_path, INPUT_FORMS[form] + "\n" + BODY))
    assert loaded.graph.inputs == {"data": (2, 3, 11, 13)}
    assert loaded.inference.shapes["ip"] == (2, 6)
    first = loaded.net.layer[0]
    assert first.type == "Input" and list(first.top) == ["data"]
    assert not loaded.net.input and not loaded.net.input_dim and not loaded.net.input_shape


def test_two_inputs_with_input_dim(tmp_path):
    text = """
    input: "a" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4
    input: "b" input_dim: 1 input_dim: 5 input_dim: 3 input_dim: 4
    layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "c" }
    """
    loaded = load_net(write(tmp_path, text))
    assert loaded.graph.inputs == {"a": (1, 2, 3, 4), "b": (1, 5, 3, 4)}
    assert loaded.inference.shapes["c"] == (1, 7, 3, 4)


def test_input_without_dims_takes_its_shape_from_the_caller(tmp_path):
    path = write(tmp_path, 'input: "data"\n' + BODY)
    net, _ = load_prototxt(path)
    upgrade_net(net)
    assert net.layer[0].type == "Input" and len(net.layer[0].input_param.shape) == 0
    loaded = load_net(path, input_shapes={"data": (3, 2, 5, 7)})
    assert loaded.inference.shapes["ip"] == (3, 6)


def test_input_without_dims_that_a_layer_produces_is_dropped_as_caffe_does(tmp_path):
    """cnn-models' AlexNet: ``input: "data"`` with no shape and an Input layer with top "data".
    Caffe's UpgradeNetInput drops an input without dimensions (pycaffe, loading that
    file, lists the one input "data" at 10x3x227x227, from the Input layer)."""
    layer = 'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 4 dim: 5 } } }'
    path = write(tmp_path, 'input: "data"\n' + layer + "\n" + BODY)
    net, _ = load_prototxt(path)
    upgrade_net(net)
    assert [(layer.name, list(layer.top)) for layer in net.layer[:1]] == [("input", ["data"])]
    assert len(net.layer) == 2 and not net.input
    loaded = load_net(path)
    assert loaded.graph.inputs == {"data": (10, 3, 4, 5)}
    assert loaded.inference.shapes["ip"] == (10, 6)


def test_only_the_produced_inputs_without_dims_are_dropped(tmp_path):
    layer = 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 5 } } }'
    net, _ = load_prototxt(write(tmp_path, 'input: "data" input: "rois"\n' + layer))
    upgrade_net(net)
    assert [(layer.type, list(layer.top)) for layer in net.layer] == [
        ("Input", ["rois"]),
        ("Input", ["data"]),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'input: "data" input_dim: 1 input_dim: 3 input_dim: 8',
            "need 4 input_dim values, found 3",
        ),
        (
            'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8 input_shape { dim: 1 }',
            "either input_shape or the deprecated input_dim",
        ),
    ],
)
def test_inconsistent_input_fields(tmp_path, text, message):
    net, _ = load_prototxt(write(tmp_path, text + "\n" + BODY))
    with pytest.raises(NetDefinitionError, match=message):
        upgrade_net(net, path="net.prototxt")


def test_v1_data_layer_transform_fields_move_to_transform_param(tmp_path):
    text = """
    layers { name: "data" type: DATA top: "data" top: "label"
             data_param { source: "db" batch_size: 4 crop_size: 17 mean_file: "m.binaryproto" mirror: true scale: 0.5 } }
    layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
    """
    net, _ = load_prototxt(write(tmp_path, text))
    upgrade_net(net)
    data = net.layer[0]
    t = data.transform_param
    assert (t.crop_size, t.mean_file, t.mirror, t.scale) == (17, "m.binaryproto", True, 0.5)
    for name in ("crop_size", "mean_file", "mirror", "scale"):
        assert not data.data_param.HasField(name)
    assert data.data_param.source == "db" and data.data_param.batch_size == 4


def test_mixed_v1_and_v2_layers_are_refused(tmp_path):
    text = 'layers { name: "a" type: RELU }\nlayer { name: "b" type: "ReLU" }'
    net, _ = load_prototxt(write(tmp_path, text))
    with pytest.raises(NetDefinitionError, match=r"net\.prototxt: net mixes V1"):
        upgrade_net(net, path=str(tmp_path / "net.prototxt"))


def test_unknown_v0_layer_types_are_refused_by_name(tmp_path):
    text = 'input: "data"\nlayers { layer { name: "conv" type: "convolution" } bottom: "data" }'
    net, _ = load_prototxt(write(tmp_path, text))
    with pytest.raises(NetDefinitionError, match=r'unknown V0 layer type "convolution"'):
        upgrade_net(net)


@pytest.mark.parametrize(("name", "batch", "classes"), [("age", 1, 8), ("gender", 10, 2)])
def test_official_deploy_nets(shared, name, batch, classes):
    loaded = load_net(shared / f"deploy_{name}.prototxt")
    assert loaded.prototxt_format == "V1"
    assert loaded.graph.inputs == {"data": (batch, 3, 227, 227)}
    shapes = loaded.inference.shapes
    assert shapes["pool5"] == (batch, 384, 7, 7)  # Caffe's ceil rounding: 18816 inputs to fc6
    assert shapes["fc8"] == (batch, classes) and shapes["prob"] == (batch, classes)
    assert loaded.inference.params["fc6"] == [(512, 18816), (512,)]
    norm1 = next(n for n in loaded.graph.nodes if n.name == "norm1").param.lrn_param
    assert (norm1.local_size, norm1.alpha, norm1.beta) == (5, pytest.approx(1e-4), 0.75)


@pytest.mark.parametrize("name", ["age", "gender"])
@pytest.mark.parametrize("phase", ["TEST", "TRAIN"])
def test_official_train_val_nets(shared, name, phase):
    from caffe_compat.ir.phase import NetState, layer_included

    path = shared / f"train_val_{name}_fold0.prototxt"
    loaded = load_net(path, phase=phase)
    assert loaded.prototxt_format == "V1"
    assert loaded.graph.inputs == {"data": (50, 3, 227, 227)}  # batch_size 50, crop_size 227
    state = NetState.make(phase)
    (data,) = [
        layer for layer in loaded.net.layer if layer.type == "Data" and layer_included(state, layer)
    ]
    expected_db = "train" if phase == "TRAIN" else "val"
    assert data.data_param.source.endswith(f"{name}_{expected_db}_lmdb")
    assert data.transform_param.mirror is (phase == "TRAIN")
    assert data.transform_param.crop_size == 227
    dropped = {layer for layer, _ in loaded.graph.dropped}
    assert dropped == ({"data", "loss", "accuracy"} if phase == "TEST" else {"data", "loss"})
    conv1 = next(layer for layer in loaded.net.layer if layer.name == "conv1")
    assert [(p.lr_mult, p.decay_mult) for p in conv1.param] == [(1, 1), (2, 0)]
    fc8 = next(layer for layer in loaded.net.layer if layer.name == "fc8")
    assert [(p.lr_mult, p.decay_mult) for p in fc8.param] == [(10, 1), (20, 0)]
    assert fc8.inner_product_param.num_output == (8 if name == "age" else 2)


def test_official_solver(shared):
    solver = load_solver(shared / "solver_fold0.prototxt")
    assert solver.base_lr == pytest.approx(0.001)
    assert solver.lr_policy == "step"
    assert solver.gamma == pytest.approx(0.1)
    assert solver.stepsize == 10000
    assert solver.momentum == pytest.approx(0.9)
    assert solver.weight_decay == pytest.approx(5e-4)
    assert solver.solver_mode == caffe_pb2.SolverParameter.GPU
    assert solver.net.endswith(".prototxt")


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.prototxt"
    path.write_bytes(b"\xef\xbb\xbf" + V1_TEXT.encode())
    net, _ = load_prototxt(path)
    assert net.name == "old"


def test_line_index_handles_one_line_layers_strings_and_comments():
    text = (
        'name: "x"  # layer { name: "not a layer" }\n'  # 1
        'layer { name: "a" type: "ReLU" } layer { name: "b\\"q" }\n'  # 2
        "layers\n"  # 3
        "{\n"  # 4
        '  top: "name" name: "c"  # } a brace in a comment\n'  # 5
        '  p { name: "inner" s: "}" }\n'  # 6
        "}\n"  # 7
        'input: "data"\n'  # 8
    )
    index = index_layers(text)
    assert index.starts == [(2, "a"), (2, 'b"q'), (3, "c")]
    assert index.ends == [2, 2, 7]
    assert [index.layer_at(n) for n in (1, 3, 6, 7, 8)] == [None, "c", "c", "c", None]
    assert index.line_of("c") == 3


def test_line_index_finds_v0_names_in_the_inner_layer_block():
    text = (
        'input: "data"\n'  # 1
        "layers {\n"  # 2
        '  layer { name: "conv1" type: "conv" param { name: "not it" } }\n'  # 3
        '  bottom: "data" top: "conv1"\n'  # 4
        "}\n"  # 5
        'layers { layer { type: "pool" name: "pool1" } top: "pool1" }\n'  # 6
        'layer { name: "r" type: "ReLU" param { name: "shared" } }\n'  # 7
    )
    index = index_layers(text)
    assert index.starts == [(2, "conv1"), (6, "pool1"), (7, "r")]
    assert index.ends == [5, 6, 7]


def test_unknown_fields_can_be_skipped(tmp_path):
    text = BODY.replace("num_output: 6", "num_output: 6 fork_only: 1") + '\ninput: "data"'
    path = write(tmp_path, text)
    with pytest.raises(
        PrototxtError, match=r'net\.prototxt:1: layer "ip": .* no field named "fork_only"'
    ):
        load_prototxt(path)
    net, _ = load_prototxt(path, allow_unknown_fields=True)
    assert net.layer[0].inner_product_param.num_output == 6


def test_a_v1_layers_entry_with_a_string_type_is_refused_as_caffe_refuses_it(tmp_path):
    """caffe-googlenet-bn's deploy ends with ``layers { type: "Softmax" }`` after V2 layers;
    BVLC Caffe stops there too ("Expected integer or identifier, got: "Softmax""). Lenient
    (--allow-unknown-fields), the entry is read as the V2 ``layer`` it was meant to be, and the
    report says so; a V1 entry with an enum type, or a V0 net's inner block, is left alone."""
    from caffe_compat.io.prototxt import v1_string_types

    text = BODY + '\nlayers {\n  name: "prob"\n  type: "Softmax"\n  bottom: "ip" top: "prob"\n}\n'
    path = write(tmp_path, text)
    with pytest.raises(
        PrototxtError,
        match=r'net\.prototxt:4: layer "prob": .*refuses this file too.*allow_unknown_fields',
    ):
        load_prototxt(path)
    net, index = load_prototxt(path, allow_unknown_fields=True)
    assert [layer.type for layer in net.layer][-1] == "Softmax" and not net.layers
    assert index.repaired == [(2, index.repaired[0][1])] and "read as a V2" in index.repaired[0][1]
    path.write_text('input: "data" input_shape { dim: 1 dim: 3 }\n' + text)
    loaded = load_net(path, allow_unknown_fields=True)
    assert any('line 3, layer "prob": a V1 `layers` entry' in n for n in loaded.assumed)
    assert v1_string_types('layers { name: "a" type: SOFTMAX }\n# layers { type: "x" }') == []
    assert v1_string_types('layers { layer { name: "a" type: "conv" } }') == []


def test_skipped_fork_fields_are_named_with_their_line_and_layer(tmp_path):
    """--allow-unknown-fields skips a field Caffe does not know, and the report names it
    (inspect's notes), nested fields of a skipped message once."""
    from caffe_compat.ir.load import fork_notes, load_net
    from caffe_compat.tools.inspect import inspect_net

    path = tmp_path / "fork.prototxt"
    path.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 '
        "dim: 4 dim: 4 } } }\n"
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p"\n'
        "  pooling_param { pool: MAX kernel_size: 2 stride: 2 frob_mode: 1 }\n"
        "  mystery_param { depth { x: 1 } } }\n"
    )
    loaded = load_net(path, allow_unknown_fields=True)
    assert loaded.skipped_fields == [
        'line 3, layer "p": caffe.PoolingParameter.frob_mode',
        'line 4, layer "p": caffe.LayerParameter.mystery_param',
    ]
    notes = inspect_net(path, allow_unknown_fields=True)["notes"]
    assert [n for n in notes if "frob_mode" in n or "mystery_param" in n] == fork_notes(loaded)
