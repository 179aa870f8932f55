"""Every bad net definition is one NetDefinitionError naming the layer and the field, and exit 2
through the CLI: the checks Caffe's Net::Init and LayerSetUp make (ir/validate.py and the types'
facts), shape rules that fail in unexpected ways, and definitions too large to parse."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat import registry
from caffe_compat.cli.main import main
from caffe_compat.errors import CaffeCompatError, NetDefinitionError, PrototxtError
from caffe_compat.ir.load import load_net

U32_MAX = 2**32 - 1
I32_MAX = 2**31 - 1
INPUT = 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n'


def write(tmp_path, text: str, name: str = "net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(tmp_path, text: str, *parts: str, **options) -> NetDefinitionError:
    """load_net raises NetDefinitionError whose one-line message holds every part."""
    path = write(tmp_path, text)
    with pytest.raises(NetDefinitionError) as info:
        load_net(path, **options)
    message = str(info.value)
    assert "\n" not in message
    for part in (str(path), *parts):
        assert part in message, message
    return info.value


def cli_refuses(capsys, *args) -> str:
    """The CLI exits 2 without a traceback. Commands print one error line on stderr; inspect
    reports what it found on stdout (its problems are the report), which is returned whole."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err and "internal error" not in err
    lines = err.strip().splitlines()
    if args[0] == "inspect" and not lines:
        return out
    assert len(lines) == 1, err
    return lines[0]


# --- data layers -------------------------------------------------------------------------------


def test_memory_data_declares_its_input_shape(tmp_path):
    text = """
layer { name: "data" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 4 channels: 3 height: 10 width: 12 } }
layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }
"""
    loaded = load_net(write(tmp_path, text))
    assert loaded.graph.inputs == {"data": (4, 3, 10, 12)}


def test_memory_data_without_sizes_asks_for_a_shape(tmp_path):
    text = """
layer { name: "data" type: "MemoryData" top: "data" memory_data_param { batch_size: 4 } }
layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }
"""
    refused(tmp_path, text, 'input "data" has no declared shape', "input_shapes=")
    path = write(tmp_path, text)
    assert load_net(path, input_shapes={"data": (4, 3, 5, 5)}).graph.inputs["data"] == (4, 3, 5, 5)


def test_dummy_data_with_num_but_no_channels(tmp_path):
    text = """
layer { name: "dummy" type: "DummyData" top: "x" dummy_data_param { num: 2 } }
layer { name: "relu" type: "ReLU" bottom: "x" top: "y" }
"""
    refused(tmp_path, text, 'layer "dummy" (DummyData)', "channels has 0 values")


def test_memory_data_batch_that_wraps(tmp_path):
    text = f"""
layer {{ name: "data" type: "MemoryData" top: "data"
        memory_data_param {{ batch_size: {U32_MAX} channels: 3 height: 4 width: 4 }} }}
layer {{ name: "relu" type: "ReLU" bottom: "data" top: "relu" }}
"""
    refused(tmp_path, text, 'layer "data" (MemoryData)', "memory_data_param.batch_size 4294967295")


# --- blob counts (CheckBlobCounts) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "parts"),
    [
        ('layer { name: "cat" type: "Concat" top: "c" }', ['"cat" (Concat)', "at least 1 bottom"]),
        (
            'layer { name: "dw" type: "ConvolutionDepthwise" top: "d" convolution_param { num_output: 3 kernel_size: 3 } }',
            ['"dw" (ConvolutionDepthwise)', "at least 1 bottom"],
        ),
        ('layer { name: "sl" type: "Slice" bottom: "data" }', ['"sl" (Slice)', "at least 1 top"]),
        (
            'layer { name: "e" type: "Eltwise" bottom: "data" top: "e" }',
            ['"e" (Eltwise)', "at least 2 bottom"],
        ),
        (
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "a" top: "b" convolution_param { num_output: 3 kernel_size: 3 } }',
            ['"conv" (Convolution)', "as many tops as bottoms"],
        ),
        (
            'layer { name: "sm" type: "Softmax" bottom: "data" bottom: "data" top: "s" }',
            ["exactly 1 bottom"],
        ),
        (
            'layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "q" top: "r" pooling_param { kernel_size: 2 } }',
            ["1 to 2 top"],
        ),
    ],
)
def test_blob_counts(tmp_path, layer, parts):
    refused(tmp_path, INPUT + layer, *parts)


# --- wiring ------------------------------------------------------------------------------------


def test_two_layers_writing_one_top_not_in_place(tmp_path):
    text = (
        INPUT
        + 'layer { name: "a" type: "ReLU" bottom: "data" top: "x" }\n'
        + 'layer { name: "b" type: "Sigmoid" bottom: "data" top: "x" }\n'
    )
    refused(tmp_path, text, 'layer "b" (Sigmoid)', 'top "x" is already produced by layer "a"')


def test_in_place_is_top_j_named_as_bottom_j(tmp_path):
    # Bottom 0 is "data", so top 0 "b" rewrites b without being in place: Caffe refuses.
    text = (
        INPUT
        + 'layer { name: "b" type: "ReLU" bottom: "data" top: "b" }\n'
        + 'layer { name: "s" type: "Scale" bottom: "data" bottom: "b" top: "b" scale_param { axis: 0 } }\n'
    )
    refused(tmp_path, text, 'layer "s" (Scale)', 'top "b" is already produced by layer "b"')
    fine = INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "data" }\n'
    assert load_net(write(tmp_path, fine, "ok.prototxt")).graph.nodes[0].name == "r"


def test_split_and_flatten_refuse_to_run_in_place(tmp_path):
    for kind in ("Split", "Flatten"):
        text = INPUT + f'layer {{ name: "l" type: "{kind}" bottom: "data" top: "data" }}\n'
        refused(tmp_path, text, f'layer "l" ({kind})', "cannot run in place")


def test_layer_lists_a_top_twice(tmp_path):
    text = INPUT + 'layer { name: "s" type: "Split" bottom: "data" top: "a" top: "a" }\n'
    refused(tmp_path, text, 'layer "s" (Split)', 'lists top "a" twice')


def test_label_top_is_not_an_input(tmp_path):
    text = """
layer { name: "data" type: "Data" top: "data" top: "label" transform_param { crop_size: 8 } }
layer { name: "s" type: "Scale" bottom: "data" bottom: "label" top: "s" }
"""
    refused(
        tmp_path, text, 'layer "s" (Scale)', 'bottom "label" is the label top of data layer "data"'
    )


# BVLC's examples/mnist/mnist_autoencoder.prototxt has this structure: one data layer per
# phase/stage, and two loss layers sharing one name (our own small net of that shape).
AUTOENCODER = """
name: "autoencoder"
layer { name: "data" type: "Data" top: "data" include { phase: TRAIN }
        data_param { batch_size: 8 } transform_param { crop_size: 6 } }
layer { name: "data" type: "Data" top: "data" include { phase: TEST stage: "test-on-train" }
        data_param { batch_size: 4 } transform_param { crop_size: 6 } }
layer { name: "data" type: "Data" top: "data" include { phase: TEST stage: "test-on-test" }
        data_param { batch_size: 2 } transform_param { crop_size: 6 } }
layer { name: "flatdata" type: "Flatten" bottom: "data" top: "flatdata" }
layer { name: "encode" type: "InnerProduct" bottom: "data" top: "encode" inner_product_param { num_output: 5 } }
layer { name: "decode" type: "InnerProduct" bottom: "encode" top: "decode" inner_product_param { num_output: 108 } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "decode" bottom: "flatdata" top: "cross_entropy_loss" }
layer { name: "decodeneuron" type: "Sigmoid" bottom: "decode" top: "decodeneuron" }
layer { name: "loss" type: "EuclideanLoss" bottom: "decodeneuron" bottom: "flatdata" top: "l2_error" }
"""


def test_dropped_loss_layers_may_share_a_name(tmp_path):
    loaded = load_net(write(tmp_path, AUTOENCODER), stages=["test-on-test"])
    assert loaded.graph.inputs == {"data": (2, 3, 6, 6)}
    assert [name for name, _ in loaded.graph.dropped].count("loss") == 2
    assert load_net(write(tmp_path, AUTOENCODER), phase="TRAIN").graph.inputs["data"][0] == 8


def test_missing_input_from_a_filtered_layer_hints_at_phase_and_stage(tmp_path, capsys):
    error = refused(tmp_path, AUTOENCODER, 'layer "flatdata"', 'bottom "data"', "--phase/--stage")
    assert "another phase or stage" in error.reason
    line = cli_refuses(capsys, "inspect", tmp_path / "net.prototxt")
    assert "--phase/--stage" in line


def test_layers_with_parameters_must_have_distinct_names(tmp_path):
    """Caffe copies a caffemodel's blobs into the first layer of a name only: refused, whichever
    of the same-named layers holds the parameters; param-free repeats load."""
    conv = "convolution_param { num_output: 2 kernel_size: 1 }"
    text = INPUT + (
        f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "a" {conv} }}\n'
        f'layer {{ name: "c" type: "Convolution" bottom: "a" top: "b" {conv} }}\n'
    )
    refused(tmp_path, text, 'layer "c" (Convolution)', '2 layers are named "c"', "first layer")
    text = INPUT + (
        'layer { name: "c" type: "ReLU" bottom: "data" top: "a" }\n'
        f'layer {{ name: "c" type: "Convolution" bottom: "a" top: "b" {conv} }}\n'
    )
    refused(tmp_path, text, 'layer "c" (Convolution)', "distinct names")
    text = INPUT + (
        'layer { name: "r" type: "ReLU" bottom: "data" top: "a" }\n'
        'layer { name: "r" type: "ReLU" bottom: "a" top: "b" }\n'
    )
    assert [n.name for n in load_net(write(tmp_path, text)).graph.nodes] == ["r", "r_1"]


# --- field ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "field"),
    [
        (
            f'layer {{ name: "L" type: "Pooling" bottom: "data" top: "p" pooling_param {{ kernel_size: 2 stride: {U32_MAX} }} }}',
            "pooling_param.stride 4294967295",
        ),
        (
            f'layer {{ name: "L" type: "Convolution" bottom: "data" top: "c" convolution_param {{ num_output: 2 kernel_size: 3 pad: {U32_MAX} }} }}',
            "convolution_param.pad 4294967295",
        ),
        (
            f'layer {{ name: "L" type: "Deconvolution" bottom: "data" top: "c" convolution_param {{ num_output: 2 kernel_size: 3 stride: {U32_MAX} }} }}',
            "convolution_param.stride 4294967295",
        ),
        (
            f'layer {{ name: "L" type: "LRN" bottom: "data" top: "n" lrn_param {{ local_size: {U32_MAX} }} }}',
            "lrn_param.local_size 4294967295",
        ),
        (
            f'layer {{ name: "L" type: "InnerProduct" bottom: "data" top: "f" inner_product_param {{ num_output: {U32_MAX} }} }}',
            "inner_product_param.num_output 4294967295",
        ),
        (
            f'layer {{ name: "L" type: "Concat" bottom: "data" top: "c" concat_param {{ concat_dim: {U32_MAX} }} }}',
            "concat_param.concat_dim 4294967295",
        ),
    ],
)
def test_unsigned_fields_that_would_wrap_in_caffe(tmp_path, capsys, layer, field):
    error = refused(tmp_path, INPUT + layer, 'layer "L"', field, "does not fit Caffe's int")
    assert "would read -" in error.reason
    assert field in cli_refuses(capsys, "inspect", tmp_path / "net.prototxt")


def test_concat_dim_out_of_range(tmp_path):
    layer = 'layer { name: "cat" type: "Concat" bottom: "data" bottom: "data" top: "c" concat_param { concat_dim: 7 } }'
    refused(tmp_path, INPUT + layer, 'layer "cat" (Concat)', "concat_dim 7 is out of range")


def test_concat_axis_and_concat_dim_together(tmp_path):
    layer = 'layer { name: "cat" type: "Concat" bottom: "data" top: "c" concat_param { axis: 1 concat_dim: 1 } }'
    refused(tmp_path, INPUT + layer, 'layer "cat" (Concat)', "not both")


ZERO_D = (
    'layer { name: "sum" type: "Reduction" bottom: "data" top: "s" reduction_param { axis: 0 } }\n'
)


def test_argmax_on_a_0d_blob(tmp_path):
    text = INPUT + ZERO_D + 'layer { name: "am" type: "ArgMax" bottom: "s" top: "a" }'
    refused(tmp_path, text, 'layer "am" (ArgMax)', "at least one axis")


def test_detection_output_on_0d_blobs(tmp_path):
    text = (
        INPUT
        + ZERO_D
        + 'layer { name: "det" type: "DetectionOutput" bottom: "s" bottom: "s" bottom: "s" top: "d" detection_output_param { num_classes: 2 } }'
    )
    refused(tmp_path, text, 'layer "det" (DetectionOutput)', "0-D bottom")


def test_prior_box_infinite_aspect_ratio_with_flip(tmp_path):
    text = (
        INPUT
        + 'layer { name: "pb" type: "PriorBox" bottom: "data" bottom: "data" top: "p" prior_box_param { min_size: 4 aspect_ratio: inf flip: true } }'
    )
    refused(tmp_path, text, 'layer "pb" (PriorBox)', "prior_box_param.aspect_ratio inf")


@pytest.mark.parametrize("dims", [(1, 3, -1, 5), (1, 0, 4, 4)])
def test_input_dims_must_be_positive(tmp_path, capsys, dims):
    text = 'input: "data"\n' + "".join(f"input_dim: {d}\n" for d in dims)
    text += 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
    refused(
        tmp_path, text, 'layer "input" (Input)', "is not positive", "(input_param or input_dim)"
    )
    path = tmp_path / "net.prototxt"
    cli_refuses(capsys, "inspect", path)
    cli_refuses(capsys, "synth", path, "-o", tmp_path / "w.caffemodel")
    assert not (tmp_path / "w.caffemodel").exists()
    with pytest.raises(NetDefinitionError, match="not positive"):
        load_net(
            write(
                tmp_path,
                INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }',
                "ok.prototxt",
            ),
            input_shapes={"data": dims},
        )


def test_input_needs_a_batch_axis(tmp_path):
    text = 'layer { name: "in" type: "Input" top: "x" input_param { shape { } } }\n'
    text += 'layer { name: "r" type: "ReLU" bottom: "x" top: "r" }\n'
    refused(tmp_path, text, 'layer "in" (Input)', "at least one axis")


def test_input_over_caffes_blob_limit(tmp_path, capsys):
    # 145 bytes that used to ask for hundreds of GiB: Caffe's Blob refuses over INT_MAX values.
    text = 'input: "data"\ninput_dim: 1 input_dim: 3 input_dim: 100000 input_dim: 100000\n'
    text += 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
    refused(tmp_path, text, 'input "data"', "30,000,000,000 values", "Caffe's limit")
    for command in ("convert", "verify"):
        line = cli_refuses(capsys, command, tmp_path / "net.prototxt", tmp_path / "w.caffemodel")
        assert "over Caffe's limit" in line


def test_tile_past_the_blob_limit(tmp_path):
    layer = f'layer {{ name: "t" type: "Tile" bottom: "data" top: "t" tile_param {{ tiles: {I32_MAX} }} }}'
    refused(tmp_path, INPUT + layer, 'layer "t" (Tile)', 'top "t" would be', "Caffe's limit")


def test_parameter_blob_past_the_blob_limit(tmp_path):
    # The top (2 x 10^8) is within the limit; the 10^8 x 192 weight matrix is not.
    layer = 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "f" inner_product_param { num_output: 100000000 } }'
    refused(tmp_path, INPUT + layer, 'layer "fc" (InnerProduct)', "parameter blob 0 would be")


def test_exp_base_must_be_finite(tmp_path):
    layer = 'layer { name: "e" type: "Exp" bottom: "data" top: "e" exp_param { base: inf } }'
    refused(tmp_path, INPUT + layer, 'layer "e" (Exp)', "finite")


# --- shape rules that fail unexpectedly --------------------------------------------------------


def test_any_exception_of_a_shape_rule_names_the_layer_and_its_type(tmp_path, capsys):
    @registry.register("Broken", "shape")
    def _broken(node, inputs):
        return registry.LayerShapes([inputs[0][9]], [])  # IndexError

    try:
        text = (
            INPUT
            + 'layer { name: "b" type: "Broken" bottom: "data" top: "x" power_param { power: 2 } }'
        )
        error = refused(
            tmp_path, text, 'layer "b" (Broken)', "IndexError", "power_param", "2x3x8x8"
        )
        assert error.line == 2
        cli_refuses(capsys, "inspect", tmp_path / "net.prototxt")
    finally:
        registry.unregister("Broken", "shape")


# --- ArgMax over a 1-D bottom runs in both back ends ------------------------------------------


def test_argmax_over_a_1d_bottom(tmp_path):
    import onnxruntime as ort
    import torch

    from caffe_compat.converters.onnx.export import to_onnx
    from caffe_compat.converters.torch.model import CaffeNet

    text = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 } } }
layer { name: "am" type: "ArgMax" bottom: "x" top: "a" argmax_param { out_max_val: true } }
"""
    graph = load_net(write(tmp_path, text)).graph
    assert graph.shapes["a"] == (4, 2, 1)
    x = np.array([0.5, -2.0, 3.0, 7.0], dtype=np.float32)
    # Each item holds one value: its index is 0 and its maximum is itself.
    expected = np.stack([np.zeros(4), x], axis=1)[..., None].astype(np.float32)
    with torch.no_grad():
        mine = CaffeNet(graph)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(mine, expected)
    session = ort.InferenceSession(to_onnx(graph).SerializeToString())
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], expected)


# --- definitions too large to parse ------------------------------------------------------------


def test_layer_count_limit(tmp_path, monkeypatch, capsys):
    text = INPUT + "".join(
        f'layer {{ name: "r{i}" type: "ReLU" bottom: "data" top: "data" }}\n' for i in range(20)
    )
    path = write(tmp_path, text)
    assert len(load_net(path).graph.nodes) == 20
    monkeypatch.setenv("CAFFE_COMPAT_MAX_LAYERS", "10")
    with pytest.raises(PrototxtError, match="21 layers, over the limit of 10"):
        load_net(path)
    assert "CAFFE_COMPAT_MAX_LAYERS" in cli_refuses(capsys, "inspect", path)


def test_file_size_limit(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    monkeypatch.setenv("CAFFE_COMPAT_MAX_PROTOTXT_BYTES", "64")
    with pytest.raises(PrototxtError, match="over the limit of 64"):
        load_net(path)
    assert "CAFFE_COMPAT_MAX_PROTOTXT_BYTES" in cli_refuses(capsys, "inspect", path)
    monkeypatch.setenv("CAFFE_COMPAT_MAX_PROTOTXT_BYTES", "lots")
    with pytest.raises(CaffeCompatError, match="positive integer"):
        load_net(path)


def test_default_limit_refuses_a_huge_file_without_parsing_it(tmp_path):
    import time

    path = tmp_path / "huge.prototxt"
    line = b'layer { name: "r" type: "ReLU" bottom: "data" top: "data" }\n'
    with open(path, "wb") as handle:
        handle.write(line * (9 * 2**20 // len(line)))
    start = time.perf_counter()
    with pytest.raises(PrototxtError, match="over the limit"):
        load_net(path)
    assert time.perf_counter() - start < 1.0


def test_embed_gets_valid_synthetic_ids_and_refuses_others(tmp_path):
    import torch

    from caffe_compat.converters.torch.model import CaffeNet
    from caffe_compat.tools.synth import synthesize
    from caffe_compat.verify.inputs import feeds_for, index_inputs

    text = """
layer { name: "in" type: "Input" top: "ids" input_param { shape { dim: 2 dim: 5 } } }
layer { name: "emb" type: "Embed" bottom: "ids" top: "e" embed_param { num_output: 3 input_dim: 7 } }
"""
    loaded = load_net(write(tmp_path, text))
    assert index_inputs(loaded.graph) == {"ids": 7}
    feeds = feeds_for(loaded.graph.inputs, 50, ids=index_inputs(loaded.graph))
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() <= 6
    assert np.array_equal(feeds["ids"], np.round(feeds["ids"]))
    synthesize(loaded)  # calibration runs on ids, not on image-like values
    model = CaffeNet(loaded.graph)
    with pytest.raises(
        CaffeCompatError, match=r'layer "emb" \(Embed\).*outside the table\'s rows 0..6'
    ):
        model(torch.tensor([[0.0, 1, 2, 3, 9]] * 2))


# InnerProduct over axis 0 folds the batch into its inputs: its weights fit batch 2 only.
BATCH_BOUND = """
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 5 axis: 0 } }
"""


# AM-Softmax's test nets: the batch and its mirror image concatenated along axis 0, features
# for both, split in halves and joined per item: two rows per item, any batch.
MIRROR_PAIRS = """
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 100 dim: 3 dim: 4 dim: 4 } } }
layer { name: "flip" type: "Flip" bottom: "data" top: "flipped" }
layer { name: "cat" type: "Concat" bottom: "data" bottom: "flipped" top: "both" concat_param { axis: 0 } }
layer { name: "fc" type: "InnerProduct" bottom: "both" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "half" type: "Slice" bottom: "fc" top: "a" top: "b" slice_param { axis: 0 } }
layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" top: "out" eltwise_param { operation: MAX } }
"""


def test_two_rows_per_item_follow_the_batch(tmp_path):
    from caffe_compat.ir.infer import batch_dependence

    assert batch_dependence(load_net(write(tmp_path, MIRROR_PAIRS)).graph) is None
    fixed = MIRROR_PAIRS.replace(
        "slice_param { axis: 0 }", "slice_param { axis: 0 slice_point: 100 }"
    )
    why = batch_dependence(load_net(write(tmp_path, fixed, "fixed.prototxt")).graph)
    assert why is not None and "at another batch size" in why


def test_nets_computing_across_the_batch_run_at_their_own_batch(tmp_path, capsys):
    from caffe_compat.ir.infer import batch_dependence
    from caffe_compat.tools.synth import synthesize
    from caffe_compat.verify import verify_loaded

    path = write(tmp_path, BATCH_BOUND)
    loaded = load_net(path)
    assert (
        batch_dependence(loaded.graph) == 'layer "fc" (InnerProduct) computes across the batch axis'
    )
    assert (
        batch_dependence(
            load_net(
                write(
                    tmp_path,
                    INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }',
                    "free.prototxt",
                )
            ).graph
        )
        is None
    )
    synthesize(loaded)  # calibrates at batch 2, not 16
    report = verify_loaded(
        loaded, opencv=False, require_reference=False, devices=("cpu",), batch=20
    )
    assert report.batch == 2 and "the net's own batch" in report.inputs and report.passed
    with pytest.raises(CaffeCompatError, match="runs only at its declared batch 2"):
        verify_loaded(
            loaded,
            feeds={"data": np.zeros((3, 3, 4, 4), np.float32)},
            opencv=False,
            require_reference=False,
        )
    weights = tmp_path / "w.caffemodel"
    assert main(["synth", str(path), "-o", str(weights)]) == 0
    assert "over 2 unseen inputs" not in capsys.readouterr().out  # fc's top is 5-wide, not per item
    assert main(
        ["convert", str(path), str(weights), "-o", str(tmp_path / "m"), "--to", "onnx"]
    ) in (0, 1)
    assert "internal error" not in capsys.readouterr().err


@pytest.mark.parametrize("axes", [33, 10_000])
def test_too_many_axes_is_one_short_line(tmp_path, capsys, axes):
    """Caffe's kMaxBlobAxes (32): a 10,000-axis input is refused without a 4,772-digit count."""
    dims = " ".join(["dim: 2"] * axes)
    text = (
        f'layer {{ name: "in" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
    )
    error = refused(tmp_path, text, f"{axes:,} axes", "over Caffe's limit of 32 (kMaxBlobAxes)")
    assert len(str(error)) - len(str(tmp_path)) < 300
    line = cli_refuses(capsys, "synth", tmp_path / "net.prototxt", "-o", tmp_path / "w.caffemodel")
    assert len(line) - len(str(tmp_path)) < 300


def test_reshape_to_too_many_axes(tmp_path):
    dims = " ".join(["dim: 0"] * 4 + ["dim: 1"] * 36)
    text = (
        INPUT
        + f'layer {{ name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param {{ shape {{ {dims} }} }} }}\n'
    )
    refused(tmp_path, text, 'layer "r" (Reshape)', "40 axes")
    many = " ".join(["dim: 1"] * 10_000)  # and a long shape in any rule's message is cut
    text = (
        INPUT
        + f'layer {{ name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param {{ shape {{ {many} }} }} }}\n'
    )
    assert len(str(refused(tmp_path, text, 'layer "r" (Reshape)', "more characters)"))) < 2100


def test_huge_counts_are_written_by_magnitude(tmp_path):
    text = (
        'layer { name: "in" type: "Input" top: "data" input_param { shape { '
        + "dim: 2147483647 " * 20
        + "} } }\n"
    )
    error = refused(tmp_path, text, "about 10^186 values", "2,147,483,647")
    assert len(str(error)) - len(str(tmp_path)) < 300


@pytest.mark.parametrize("side", ["top", "bottom"])
def test_empty_blob_names_are_refused(tmp_path, capsys, side):
    layer = 'layer { name: "conv" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 3 } }\n'
    text = INPUT + layer.replace(f'{side}: "{"data" if side == "bottom" else "c"}"', f'{side}: ""')
    refused(tmp_path, text, 'layer "conv" (Convolution)', f"{side} 0 has an empty name")
    cli_refuses(capsys, "convert", tmp_path / "net.prototxt", tmp_path / "w.caffemodel")


@pytest.mark.parametrize("command", ["synth", "convert"])
def test_an_output_path_that_is_a_folder_is_one_line(tmp_path, capsys, command):
    net = write(tmp_path, INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    weights = tmp_path / "w.caffemodel"
    assert main(["synth", str(net), "-o", str(weights)]) == 0
    capsys.readouterr()
    folder = tmp_path / ("out.caffemodel" if command == "synth" else "out.onnx")
    folder.mkdir()
    args = ["-o", folder] if command == "synth" else [weights, "-o", tmp_path / "out"]
    for force in ([], ["--force"]):
        line = cli_refuses(capsys, command, net, *args, *force)
        assert f"{folder}: the output path is a folder" in line
    assert folder.is_dir() and not list(folder.iterdir())
