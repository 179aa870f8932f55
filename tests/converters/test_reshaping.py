"""Split, Concat, Flatten, Slice, Reshape, Crop and Tile against OpenCV 4 (it has no Tile) and numpy
versions of Caffe's formulas."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _harness import net


@pytest.mark.parametrize(
    ("params", "axis", "bounds"),
    [
        ("slice_point: 1 slice_point: 3", 1, [0, 1, 3, 5]),
        ("axis: 2 slice_point: 2", 2, [0, 2, 7]),
        ("axis: -1", -1, [0, 3, 6, 9]),  # equal parts
        ("axis: 3 slice_point: 4", 3, [0, 4, 9]),
        ("slice_dim: 2 slice_point: 5", 2, [0, 5, 7]),  # the legacy field
        ("axis: 0 slice_point: 1", 0, [0, 1, None]),  # over the batch: the last top takes the rest
    ],
)
def test_slice(layer_check, params, axis, bounds):
    tops = "".join(f' top: "t{i}"' for i in range(len(bounds) - 1))
    prototxt = net(
        f'layer {{ name: "s" type: "Slice" bottom: "data"{tops} slice_param {{ {params} }} }}'
    )

    def expected(inputs, w):
        x = inputs["data"]
        index = [slice(None)] * 4
        out = {}
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            index[axis] = slice(a, b)
            out[f"t{i}"] = x[tuple(index)]
        return out

    # OpenCV's Caffe reader cannot split into equal parts (no slice_point) and ignores slice_dim.
    layer_check(prototxt, expected, opencv="slice_point" in params and "slice_dim" not in params)


def test_slice_single_top_is_identity_and_equal_batch_split(layer_check):
    prototxt = net(
        'layer { name: "one" type: "Slice" bottom: "data" top: "same" }\n'
        'layer { name: "halves" type: "Slice" bottom: "same" top: "h0" top: "h1" slice_param { axis: 0 } }'
    )
    expected = lambda i, w: {"same": i["data"], "h0": i["data"][:1], "h1": i["data"][1:]}  # noqa: E731
    # 3 items do not split into 2 equal parts; OpenCV cannot split without slice_point.
    layer_check(prototxt, expected, opencv=False, dynamic=False)


@pytest.mark.parametrize(
    ("params", "shape"),
    [
        ("shape { dim: 0 dim: -1 }", lambda n: (n, 315)),
        ("shape { dim: 0 dim: 0 dim: -1 dim: 3 }", lambda n: (n, 5, 21, 3)),
        ("shape { dim: -1 dim: 7 dim: 5 dim: 9 }", lambda n: (n, 7, 5, 9)),
        ("axis: 1 num_axes: 2 shape { dim: 35 }", lambda n: (n, 35, 9)),
        ("axis: 1 num_axes: 2 shape { dim: 0 dim: -1 dim: 1 }", lambda n: (n, 5, 7, 1, 9)),
        ("axis: -1 num_axes: 0 shape { dim: 1 }", lambda n: (n, 5, 7, 9, 1)),
        ("axis: 2 num_axes: 0 shape { dim: 1 dim: 1 }", lambda n: (n, 5, 1, 1, 7, 9)),
        ("axis: -2 shape { dim: 3 dim: -1 }", lambda n: (n, 5, 7, 3, 3)),
        ("axis: 0 num_axes: 0 shape { dim: 1 dim: -1 }", lambda n: (1, 1, n, 5, 7, 9)),
        ("axis: 0 num_axes: 1 shape { dim: -1 dim: 1 }", lambda n: (n, 1, 5, 7, 9)),
        ("shape { dim: -1 }", lambda n: (n * 315,)),
        ("axis: 0 num_axes: 0 shape { }", lambda n: (n, 5, 7, 9)),
    ],
)
def test_reshape(layer_check, params, shape):
    prototxt = net(
        f'layer {{ name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param {{ {params} }} }}'
    )
    expected = lambda i, w: {"r": i["data"].reshape(shape(len(i["data"])))}  # noqa: E731
    # OpenCV rejects negative axes and num_axes 0 (inserting axes) here.
    layer_check(prototxt, expected, opencv="num_axes: 0" not in params and "axis: -" not in params)


CROP = (
    'layer { name: "in" type: "Input" top: "data" top: "like" input_param { '
    "shape { dim: 2 dim: 5 dim: 7 dim: 9 } shape { %s } } }\n"
)


@pytest.mark.parametrize(
    ("like", "params", "index"),
    [
        ((2, 5, 4, 5), "", np.s_[:, :, :4, :5]),
        ((2, 5, 4, 5), "offset: 2", np.s_[:, :, 2:6, 2:7]),
        ((2, 5, 4, 5), "axis: 2 offset: 3 offset: 1", np.s_[:, :, 3:7, 1:6]),
        ((2, 3, 4, 5), "axis: 1 offset: 1 offset: 2 offset: 3", np.s_[:, 1:4, 2:6, 3:8]),
        ((2, 3, 5, 7), "axis: -3 offset: 2", np.s_[:, 2:5, 2:7, 2:9]),
        ((2, 5, 7, 4), "axis: 3 offset: 5", np.s_[:, :, :, 5:9]),
    ],
)
def test_crop(layer_check, like, params, index):
    dims = " ".join(f"dim: {d}" for d in like)
    prototxt = (
        CROP % dims
        + f'layer {{ name: "c" type: "Crop" bottom: "data" bottom: "like" top: "c" crop_param {{ {params} }} }}'
    )
    layer_check(prototxt, lambda i, w: {"c": i["data"][index]}, opencv="axis: -3" not in params)


def test_crop_fcn_upsampled_scores_to_the_image(layer_check):
    """FCN's pattern: downsample, upsample with a Deconvolution, crop back to the input size."""
    prototxt = (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 20 dim: 22 } } }\n'
        'layer { name: "score" type: "Convolution" bottom: "data" top: "score" convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }\n'
        'layer { name: "up" type: "Deconvolution" bottom: "score" top: "up" convolution_param { num_output: 4 kernel_size: 6 stride: 2 group: 4 bias_term: false } }\n'
        'layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { axis: 2 offset: 1 } }'
    )
    layer_check(prototxt)


@pytest.mark.parametrize(
    ("params", "axis", "tiles"),
    [
        ("tiles: 3", 1, 3),
        ("axis: -1 tiles: 2", 3, 2),
        ("axis: 0 tiles: 2", 0, 2),
        ("axis: 2 tiles: 1", 2, 1),
    ],
)
def test_tile(layer_check, params, axis, tiles):
    """OpenCV 4 has no Caffe Tile (its Tile layer reads ONNX's repeats): numpy is the reference."""
    prototxt = net(
        f'layer {{ name: "t" type: "Tile" bottom: "data" top: "t" tile_param {{ {params} }} }}\n'
        'layer { name: "abs" type: "AbsVal" bottom: "t" top: "t" }'
    )
    reps = [tiles if i == axis else 1 for i in range(4)]
    layer_check(prototxt, lambda i, w: {"t": np.abs(np.tile(i["data"], reps))}, opencv=False)


@pytest.mark.parametrize(
    ("sizes", "index"),
    [((0, 0, 2, 3), np.s_[:, :, 2:-2, 3:-3]), ((0, 2, 0, 1), np.s_[:, 2:-2, :, 1:-1])],
)
def test_crop_center(layer_check, sizes, index):
    """lltcggie/caffe's (waifu2x-caffe's) CropCenter; OpenCV 4 has no such layer."""
    crops = " ".join(f"crop_size: {c}" for c in sizes)
    prototxt = net(
        f'layer {{ name: "cc" type: "CropCenter" bottom: "data" top: "cc" crop_center_param {{ {crops} }} }}'
    )
    layer_check(prototxt, lambda i, w: {"cc": i["data"][index]}, opencv=False)


def test_auto_crop_rcf_side_output(layer_check):
    """RCF's AutoCrop: a 1x1 score, pooled then upsampled by a Deconvolution, cropped back to
    the image at the offset the coordinate maps give (1 here; tests/reference has the sums)."""
    prototxt = (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 20 dim: 22 } } }\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }\n'
        'layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
        'layer { name: "score" type: "Convolution" bottom: "pool" top: "score" convolution_param { num_output: 1 kernel_size: 1 } }\n'
        'layer { name: "up" type: "Deconvolution" bottom: "score" top: "up" convolution_param { num_output: 1 kernel_size: 4 stride: 2 } }\n'
        'layer { name: "crop" type: "AutoCrop" bottom: "up" bottom: "data" top: "crop" }'
    )
    reports = layer_check(prototxt, opencv=False)
    assert reports[0].comparisons


def test_crop_center_at_waifu2xs_field_number_is_moved():
    """lltcggie/caffe writes crop_center_param at 149 (upsample_param here); its one
    crop_size a binary keeps there becomes the count error the layer's own check gives."""
    from caffe_compat.io.dialects import settle
    from caffe_compat.io.wire import write_key, write_varint
    from caffe_compat.proto import caffe_pb2

    payload = write_key(2, 0) + write_varint(3)
    head = caffe_pb2.LayerParameter(name="cc", type="CropCenter").SerializeToString()
    netp = caffe_pb2.NetParameter()
    netp.layer.add().MergeFromString(
        head + write_key(149, 2) + write_varint(len(payload)) + payload
    )
    assert netp.layer[0].HasField("upsample_param")
    notes = settle(netp)
    assert list(netp.layer[0].crop_center_param.crop_size) == [3]
    assert not netp.layer[0].HasField("upsample_param")
    assert "149" in notes[0]


@pytest.mark.parametrize(
    "body",
    [
        'layer { name: "cc" type: "CropCenter" bottom: "data" top: "cc" crop_center_param { crop_size: 1 } }',
        'layer { name: "cc" type: "CropCenter" bottom: "data" top: "cc" crop_center_param { crop_size: 0 crop_size: 0 crop_size: 4 crop_size: 0 } }',
        'layer { name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: -1 dim: -1 } } }',
        'layer { name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: 0 dim: 4 dim: -1 } } }',
        'layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" slice_param { slice_point: 5 } }',
        'layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" slice_param { axis: 1 slice_dim: 1 } }',
        'layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" }',
        'layer { name: "t" type: "Tile" bottom: "data" top: "t" }',
    ],
)
def test_invalid_settings_fail_at_load(tmp_path, body):
    from caffe_compat.errors import NetDefinitionError
    from caffe_compat.ir.load import load_net

    (tmp_path / "n.prototxt").write_text(net(body))
    with pytest.raises(NetDefinitionError, match="layer"):
        load_net(tmp_path / "n.prototxt")


COMPOSITE = """
layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw" convolution_param { num_output: 5 kernel_size: 3 pad: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "dw" top: "dw" }
layer { name: "sc" type: "Scale" bottom: "dw" top: "dw" scale_param { bias_term: true } }
layer { name: "pr" type: "PReLU" bottom: "dw" top: "dw" }
layer { name: "mvn" type: "MVN" bottom: "dw" top: "mvn" }
layer { name: "pw" type: "Power" bottom: "mvn" top: "pw" power_param { power: 2 shift: 1 scale: 0.5 } }
layer { name: "lg" type: "Log" bottom: "pw" top: "lg" log_param { shift: 1 } }
layer { name: "cl" type: "Clip" bottom: "lg" top: "cl" clip_param { min: 0 max: 0.9 } }
layer { name: "sum" type: "Eltwise" bottom: "cl" bottom: "lg" top: "sum" eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "sl" type: "Slice" bottom: "sum" top: "s0" top: "s1" slice_param { slice_point: 2 } }
layer { name: "cat" type: "Concat" bottom: "s1" bottom: "s0" top: "cat" }
layer { name: "up" type: "Deconvolution" bottom: "cat" top: "up" convolution_param { num_output: 5 kernel_size: 4 stride: 2 group: 5 } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { offset: 1 } }
layer { name: "tile" type: "Tile" bottom: "crop" top: "tile" tile_param { tiles: 2 } }
layer { name: "rs" type: "Reshape" bottom: "tile" top: "rs" reshape_param { shape { dim: 0 dim: 2 dim: -1 } } }
layer { name: "red" type: "Reduction" bottom: "rs" top: "red" reduction_param { axis: 2 operation: MEAN } }
layer { name: "am" type: "ArgMax" bottom: "crop" top: "am" argmax_param { top_k: 3 out_max_val: true } }
layer { name: "sm" type: "Softmax" bottom: "red" top: "sm" }
"""


def test_every_family_exports_with_a_dynamic_batch(tmp_path):
    """One net through calibrated synthesis, torch.export with a symbolic batch (what ``convert``
    saves) and ONNX Runtime, at batch sizes other than the prototxt's; every constant a layer
    holds is a registered parameter or buffer."""
    import torch

    from caffe_compat.converters.onnx.export import to_onnx
    from caffe_compat.converters.torch.model import CaffeNet
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize
    from caffe_compat.verify.backends import run_onnxruntime

    (tmp_path / "n.prototxt").write_text(net(COMPOSITE))
    loaded = load_net(tmp_path / "n.prototxt")
    synthesize(loaded)
    model, names = CaffeNet(loaded.graph), ["sm", "am"]
    for module in model.modules():  # plain tensor attributes would not follow .to(device)
        assert not [k for k, v in vars(module).items() if isinstance(v, torch.Tensor)], module

    class Outputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            found = self.net(x, outputs=names)
            return tuple(found[n] for n in names)

    batch = torch.export.Dim("batch", min=1, max=64)
    example = (torch.zeros(2, 5, 7, 9),)
    program = torch.export.export(Outputs(), example, dynamic_shapes=({0: batch},)).module()
    onnx_bytes = to_onnx(loaded.graph).SerializeToString()
    for n in (1, 3, 5):
        x = torch.from_numpy(np.random.default_rng(n).standard_normal((n, 5, 7, 9), np.float32))
        with torch.no_grad():
            eager, exported = Outputs()(x), program(x)
        ort = run_onnxruntime(onnx_bytes, {"data": x.numpy()})
        for name, a, b in zip(names, eager, exported):
            assert a.shape[0] == n and a.shape == b.shape
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(ort[name], a.numpy(), rtol=1e-4, atol=1e-5)


def test_split_concat_flatten(layer_parity):
    layer_parity(
        net(
            'layer { name: "split" type: "Split" bottom: "data" top: "a" top: "b" }\n'
            'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }\n'
            'layer { name: "flat" type: "Flatten" bottom: "cat" top: "flat" }'
        )
    )


CONCAT = 'layer {{ name: "in" type: "Input" top: "a" top: "b" top: "c" input_param {{ {} }} }}\n'


@pytest.mark.parametrize(
    ("params", "axis"),
    [("axis: 0", 0), ("axis: 2", 2), ("axis: 3", 3), ("axis: -1", 3), ("concat_dim: 2", 2)],
)
def test_concat_axis(layer_check, params, axis):
    sizes = (1, 2, 3) if axis else (2, 2, 2)
    shapes = []
    for n in sizes:
        dims = [2, 5, 7, 9]
        dims[axis] = n
        shapes.append("shape { " + " ".join(f"dim: {d}" for d in dims) + " }")
    prototxt = (
        CONCAT.format(" ".join(shapes))
        + f'layer {{ name: "cat" type: "Concat" bottom: "a" bottom: "b" bottom: "c" top: "cat" concat_param {{ {params} }} }}'
    )
    expected = lambda i, w: {"cat": np.concatenate([i["a"], i["b"], i["c"]], axis=axis)}  # noqa: E731
    layer_check(prototxt, expected, opencv="concat_dim" not in params)  # OpenCV: no concat_dim


@pytest.mark.parametrize(
    ("params", "shape"),
    [
        ("axis: 2", lambda n: (n, 5, 63)),
        ("axis: 1 end_axis: 2", lambda n: (n, 35, 9)),
        ("axis: 0 end_axis: -1", lambda n: (n * 315,)),
        ("axis: -2 end_axis: -1", lambda n: (n, 5, 63)),
        ("axis: 2 end_axis: 2", lambda n: (n, 5, 7, 9)),
        ("axis: 0 end_axis: 1", lambda n: (n * 5, 7, 9)),
    ],
)
def test_flatten_axes(layer_check, params, shape):
    prototxt = net(
        f'layer {{ name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param {{ {params} }} }}'
    )
    expected = lambda i, w: {"f": i["data"].reshape(shape(len(i["data"])))}  # noqa: E731
    layer_check(prototxt, expected, opencv="-" not in params)
