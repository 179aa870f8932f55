"""Caffe's gradients, layer type by layer type: the training engine (PyTorch) against the float64
reference's backward, which tests/reference/test_<family>.py holds to central differences.

Each case is the layer after Input layers, a EuclideanLoss on each of its tops against a random
target (so every top diff differs), ``force_backward`` so the inputs get diffs too, and random
parameters. One ``forward_backward`` must match the reference in loss, values, parameter diffs,
blob diffs and BatchNorm's statistics within 1e-5 x the largest magnitude (tests/_training.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from _training import judge

from caffe_compat import registry
from caffe_compat.ir.load import load_net_text
from caffe_compat.train import TrainNet

RNG = np.random.default_rng(7)
X = RNG.normal(size=(2, 3, 5, 4)).astype(np.float32)


def _input(arrays: dict[str, np.ndarray]) -> str:
    tops = " ".join(f'top: "{n}"' for n in arrays)
    shapes = " ".join(
        "shape { " + " ".join(f"dim: {d}" for d in a.shape) + " }" for a in arrays.values()
    )
    return f'layer {{ name: "input" type: "Input" {tops} input_param {{ {shapes} }} }}\n'


def training_net(layers: str, arrays: dict[str, np.ndarray], *, phase: str = "TRAIN") -> str:
    """The layers, then a EuclideanLoss per top against a target input of the top's shape."""
    probe = load_net_text(_input(arrays) + layers, phase=phase, training=True).graph
    tops = [v for v in probe.outputs]
    targets = {f"{probe.blob_of[t]}_target": RNG.normal(size=probe.shapes[t]) for t in tops}
    losses = "".join(
        f'layer {{ name: "loss_{probe.blob_of[t]}" type: "EuclideanLoss" '
        f'bottom: "{probe.blob_of[t]}" bottom: "{probe.blob_of[t]}_target" }}\n'
        for t in tops
    )
    arrays.update(targets)
    return "force_backward: true\n" + _input(arrays) + layers + losses


def randomize(net: TrainNet, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    for name, row in net.params.items():
        node = net.graph.node(name)
        if registry.facts(node.type).statistics:
            c = row[0].shape
            row[0].data = rng.normal(size=c) * 2.0
            row[1].data = rng.uniform(1.0, 3.0, size=c) * 2.0
            row[2].data = np.array([2.0])
        else:
            for param in row:
                param.data = rng.normal(0.0, 0.5, size=param.shape)


def run(tmp_path, layers: str, arrays=None, *, phase="TRAIN", tol=1e-5, params=None):
    arrays = dict(arrays if arrays is not None else {"data": X})
    path = tmp_path / "net.prototxt"
    path.write_text(training_net(layers, arrays, phase=phase))
    net = TrainNet(path, phase=phase, seed=11)
    randomize(net)
    for name, values in (params or {}).items():
        for param, value in zip(net.params[name], values):
            param.data = np.asarray(value)
    feeds = {n: a for n, a in arrays.items() if n in net.input_names}
    judge(net, feeds, tol=tol)
    judge(net, feeds, tol=tol)  # again: diffs of the second pass, statistics updated twice
    return net


def L(kind: str, body: str = "", bottoms=("data",), tops=("y",), name="l") -> str:
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{kind}" {b} {t} {body} }}\n'


POSITIVE = {"data": np.abs(X) + 0.5}
CASES = {
    # activations
    "relu": L("ReLU"),
    "leaky_relu": L("ReLU", "relu_param { negative_slope: 0.2 }"),
    "prelu": L("PReLU"),
    "prelu_shared": L("PReLU", "prelu_param { channel_shared: true }"),
    "elu": L("ELU", "elu_param { alpha: 0.7 }"),
    "sigmoid": L("Sigmoid"),
    "tanh": L("TanH"),
    "absval": L("AbsVal"),
    "bnll": L("BNLL"),
    "power_cube": L("Power", "power_param { power: 3 scale: 0.7 shift: 0.2 }"),
    "power_square": L("Power", "power_param { power: 2 scale: -0.5 shift: 0.3 }"),
    "power_linear": L("Power", "power_param { power: 1 scale: 2 shift: 1 }"),
    "exp": L("Exp", "exp_param { base: 2 scale: 0.5 shift: 0.1 }"),
    "swish": L("Swish", "swish_param { beta: 1.5 }"),
    "clip": L("Clip", "clip_param { min: -0.5 max: 0.6 }"),
    "dropout_test": L("Dropout", "dropout_param { dropout_ratio: 0.3 }"),
    "dropout_train": L("Dropout", "dropout_param { dropout_ratio: 0.3 }"),
    "in_place_relu": L("InnerProduct", "inner_product_param { num_output: 6 }", tops=("h",))
    + L("ReLU", bottoms=("h",), tops=("h",), name="relu"),
    # one blob per family
    "softmax": L("Softmax", "softmax_param { axis: 2 }"),
    "inner_product": L("InnerProduct", "inner_product_param { num_output: 4 }"),
    "inner_product_transposed": L(
        "InnerProduct", "inner_product_param { num_output: 4 transpose: true axis: 2 }"
    ),
    "convolution": L(
        "Convolution", "convolution_param { num_output: 4 kernel_size: 2 stride: 2 pad: 1 }"
    ),
    "convolution_grouped": L(
        "Convolution",
        "convolution_param { num_output: 6 kernel_size: 3 group: 3 dilation: 2 pad: 1 }",
    ),
    "convolution_depthwise": L(
        "ConvolutionDepthwise", "convolution_param { num_output: 3 kernel_size: 3 pad: 1 }"
    ),
    "convolution_two_bottoms": L(
        "Convolution",
        "convolution_param { num_output: 2 kernel_size: 3 }",
        bottoms=("data", "data2"),
        tops=("y", "y2"),
    ),
    "deconvolution": L(
        "Deconvolution", "convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 }"
    ),
    "deconvolution_grouped": L(
        "Deconvolution",
        "convolution_param { num_output: 6 kernel_size: 2 stride: 2 group: 3 bias_term: false }",
    ),
    "pooling_max": L("Pooling", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
    "pooling_max_padded": L("Pooling", "pooling_param { pool: MAX kernel_size: 3 pad: 1 }"),
    "pooling_max_overhang": L("Pooling", "pooling_param { pool: MAX kernel_size: 2 stride: 3 }"),
    "pooling_ave": L("Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
    "pooling_ave_overhang": L("Pooling", "pooling_param { pool: AVE kernel_size: 2 stride: 3 }"),
    "pooling_global": L("Pooling", "pooling_param { pool: AVE global_pooling: true }"),
    "lrn_across": L("LRN", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }"),
    "lrn_within": L(
        "LRN", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }"
    ),
    "eltwise_prod": L("Eltwise", "eltwise_param { operation: PROD }", bottoms=("data", "b")),
    "eltwise_sum": L(
        "Eltwise", "eltwise_param { operation: SUM coeff: 2 coeff: -0.5 }", bottoms=("data", "b")
    ),
    "eltwise_max": L("Eltwise", "eltwise_param { operation: MAX }", bottoms=("data", "b", "c")),
    "scale": L("Scale", "scale_param { bias_term: true axis: 1 num_axes: 2 }"),
    "scale_from_bottom": L("Scale", "scale_param { axis: 0 }", bottoms=("data", "s2")),
    "bias": L("Bias"),
    "bias_from_bottom": L("Bias", "", bottoms=("data", "s35")),
    "batch_norm_train": L("BatchNorm", "batch_norm_param { moving_average_fraction: 0.9 }"),
    "batch_norm_global": L("BatchNorm", "batch_norm_param { use_global_stats: true }"),
    "mvn": L("MVN"),
    "mvn_across": L("MVN", "mvn_param { across_channels: true }"),
    "mvn_mean_only": L("MVN", "mvn_param { normalize_variance: false }"),
    "reduction_sumsq": L("Reduction", "reduction_param { operation: SUMSQ axis: 1 coeff: 0.5 }"),
    "reduction_asum": L("Reduction", "reduction_param { operation: ASUM axis: 2 }"),
    "reduction_mean": L("Reduction", "reduction_param { operation: MEAN axis: 1 coeff: 2 }"),
    "reduction_sum": L("Reduction", "reduction_param { operation: SUM axis: -1 }"),
    "concat": L("Concat", "concat_param { axis: 1 }", bottoms=("data", "b")),
    "slice": L("Slice", "slice_param { axis: 1 slice_point: 1 }", tops=("y", "z")),
    "split": L("Split", tops=("y", "z")),
    "crop": L("Crop", "crop_param { axis: 2 offset: 1 offset: 2 }", bottoms=("data", "small")),
    "crop_center": L(
        "CropCenter", "crop_center_param { crop_size: 0 crop_size: 1 crop_size: 1 crop_size: 1 }"
    ),
    "auto_crop": L(  # upsampled 2x + 3 / 2 against 2x + 1 / 2: the crop starts at 1
        "Deconvolution",
        "convolution_param { num_output: 2 kernel_size: 4 stride: 2 }",
        tops=("up",),
        name="up",
    )
    + L(
        "Deconvolution",
        "convolution_param { num_output: 2 kernel_size: 2 stride: 2 }",
        tops=("like",),
        name="like",
    )
    + L("AutoCrop", bottoms=("up", "like")),
    "tile": L("Tile", "tile_param { axis: 1 tiles: 3 }"),
    "flatten": L("Flatten"),
    "reshape": L("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 2 } }"),
    "permute": L("Permute", "permute_param { order: 0 order: 2 order: 3 order: 1 }"),
    "normalize_shared": L("Normalize", "norm_param { across_spatial: false channel_shared: true }"),
    "normalize_across": L("Normalize", "norm_param { across_spatial: true channel_shared: false }"),
    "lstm": L("LSTM", "recurrent_param { num_output: 3 }", bottoms=("data", "cont23")),
    "lstm_static": L(
        "LSTM", "recurrent_param { num_output: 2 }", bottoms=("data", "cont23", "s35")
    ),
    "rnn": L("RNN", "recurrent_param { num_output: 3 }", bottoms=("data", "cont23")),
    "lstm_unit": L("LSTMUnit", bottoms=("c132", "g138", "cont13"), tops=("y", "z")),
    "lstm_fork": L("Lstm", "lstm_param { num_output: 3 clipping_threshold: 0.05 }"),
    "lstm_fork_clip": L(
        "Lstm", "lstm_param { num_output: 2 batch_size: 2 }", bottoms=("rows63", "clip6")
    ),
    "continuation_indicator": L(
        "ContinuationIndicator", "continuation_indicator_param { time_step: 2 batch_size: 3 }"
    )
    + L("LSTM", "recurrent_param { num_output: 2 }", bottoms=("data", "y"), tops=("h",), name="m"),
    # the forks' layers (docs/forks.md)
    "relu6": L("ReLU6"),
    "mish": L("Mish"),
    "bn_segnet": L("BN", "bn_param { bn_mode: INFERENCE }"),
    "bn_pspnet": L("BN", "bn_param { frozen: true eps: 0.01 }"),
    "axpy": L("Axpy", bottoms=("s231", "data", "b")),
    "upsample_nearest": L("Upsample", "upsample_param { scale: 2 }"),
    "upsample_unpool": L(
        "Pooling", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }", tops=("p", "m")
    )
    + L("Upsample", "upsample_param { upsample_h: 5 upsample_w: 4 }", bottoms=("p", "m"), name="u"),
    "interp": L("Interp", "interp_param { zoom_factor: 2 pad_beg: -1 }"),
    "shuffle_channel": L("ShuffleChannel", "shuffle_channel_param { group: 3 }", bottoms=("c6",)),
    "reorg": L("Reorg", "reorg_param { stride: 2 }", bottoms=("c8",)),
    "tiling": L("Tiling", "tiling_param { tile_dim: 2 }", bottoms=("c8",)),
    "transpose": L("Transpose", "transpose_param { dim: 0 dim: 3 dim: 1 dim: 2 }"),
    "reverse": L("Reverse", "reverse_param { axis: 2 }"),
    "flip": L("Flip", "flip_param { flip_height: true }"),
    "im2col": L("Im2col", "convolution_param { kernel_size: 3 stride: 2 pad: 1 }"),
    "silence": L("Silence", tops=())
    + L("InnerProduct", "inner_product_param { num_output: 3 }", name="ip"),
}
EXTRA = {
    "b": RNG.normal(size=X.shape),
    "c": RNG.normal(size=X.shape),
    "data2": RNG.normal(size=X.shape),
    "s2": RNG.normal(size=(2, 3)),
    "s35": RNG.normal(size=(3, 5)),
    "small": RNG.normal(size=(2, 3, 3, 2)),
    "cont23": np.array([[0.0, 1, 0], [1, 0, 1]]),  # sequence markers: resets at both steps
    "cont13": np.array([[1.0, 0, 1]]),
    "rows63": RNG.normal(size=(6, 3)),
    "clip6": np.array([[0.0], [1], [1], [0], [1], [1]]),  # rows t + n: resets inside too
    "c132": RNG.normal(size=(1, 3, 2)),
    "g138": RNG.normal(size=(1, 3, 8)),
    "s231": RNG.normal(size=(2, 3, 1, 1)),
    "c6": RNG.normal(size=(2, 6, 2, 3)),
    "c8": RNG.normal(size=(2, 8, 4, 2)),
}
PHASES = {"dropout_test": "TEST", "batch_norm_global": "TEST", "bn_pspnet": "TEST"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_match_the_reference(tmp_path, case):
    layers = CASES[case]
    arrays = {"data": X}
    arrays.update({n: a for n, a in EXTRA.items() if f'"{n}"' in layers})
    params = None
    if case.startswith("normalize_across"):  # the fork's backward is exact for equal scales
        params = {"l": [np.full(3, 1.7)]}
    if case == "bn_pspnet":  # a variance must stay positive
        c = (1, 3, 1, 1)
        params = {
            "l": [RNG.normal(size=c), RNG.normal(size=c), RNG.normal(size=c), np.full(c, 1.5)]
        }
    run(tmp_path, layers, arrays, phase=PHASES.get(case, "TRAIN"), params=params)


def test_log_and_fractional_power_on_positive_inputs(tmp_path):
    run(tmp_path, L("Log", "log_param { base: 3 scale: 0.5 shift: 0.2 }"), POSITIVE)
    run(tmp_path, L("Power", "power_param { power: 0.5 scale: 1 shift: 0.5 }"), POSITIVE)


def test_embed_learns_its_table(tmp_path):
    indices = {"data": np.array([[0, 3], [2, 3.0]])}
    layers = L("Embed", "embed_param { num_output: 3 input_dim: 4 }")
    path = tmp_path / "net.prototxt"
    text = training_net(layers, dict(indices)).replace("force_backward: true\n", "")
    path.write_text(text)
    net = TrainNet(path, seed=1)
    randomize(net)
    feeds = {n: RNG.normal(size=(2, 2, 3)) if n == "y_target" else a for n, a in indices.items()}
    feeds.setdefault("y_target", RNG.normal(size=(2, 2, 3)))
    judge(net, feeds)
    assert float(net.params["l"][0].diff[1].abs().sum()) == 0  # row 1 was not used


def test_normalize_per_channel_scales_keep_the_forks_backward(tmp_path):
    """The SSD fork leaves the scales out of its dot product, so with different scales per
    channel its diff is not the derivative; both engines compute the fork's diff."""
    net = run(
        tmp_path,
        L("Normalize", "norm_param { across_spatial: false channel_shared: false }"),
        params={"l": [np.array([0.5, 1.0, 2.0])]},
    )
    assert net.graph.node("l").type == "Normalize"


ROIS = np.array([[0, 0, 0, 12, 16], [1, 4, 2, 15, 11], [1, 6, 6, 6, 6]], np.float32)


@pytest.mark.parametrize(
    "layer",
    [
        L(
            "ROIPooling",
            "roi_pooling_param { pooled_h: 2 pooled_w: 3 spatial_scale: 0.25 }",
            bottoms=("data", "rois"),
        ),
        L(
            "PSROIPooling",
            "psroi_pooling_param { spatial_scale: 0.25 output_dim: 3 group_size: 1 }",
            bottoms=("data", "rois"),
        ),
        L("SPP", "spp_param { pyramid_height: 2 pool: MAX }"),
        L("SPP", "spp_param { pyramid_height: 2 pool: AVE }"),
    ],
)
def test_detection_forks_pooling(tmp_path, layer):
    """ROI layers (the ROIs get no diff, as in the forks) and SPP's pyramid of poolings."""
    run(tmp_path, layer, {"data": X, "rois": ROIS} if "rois" in layer else {"data": X})


@pytest.mark.parametrize(
    "layer",
    [
        L(
            "Convolution3D",
            "convolution3d_param { num_output: 2 kernel_size: 3 kernel_depth: 2 pad: 1 "
            "temporal_pad: 1 }",
        ),
        L("Pooling3D", "pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 }"),
        L("Pooling3D", "pooling3d_param { pool: AVE kernel_size: 3 kernel_depth: 2 stride: 2 }"),
    ],
)
def test_c3d_volume_layers(tmp_path, layer):
    """C3D's 3-D convolution and pooling on N x C x L x H x W clips (continuous values: a MAX
    window has no tie, where C3D gives the diff to every tied maximum and torch to one)."""
    run(tmp_path, layer, {"data": RNG.normal(size=(2, 2, 3, 5, 4)).astype(np.float32)})


def test_dense_block_at_its_stored_statistics(tmp_path):
    """caffe_ocr's DenseBlock: the TEST phase only (its TRAIN paths differ between CPU and GPU);
    the diffs of the bottom, filters, BN scalers and biases, with and without the bottleneck."""
    rng = np.random.default_rng(4)
    widths, g = (3, 5), 2  # X has 3 channels; transition 1 reads 3 + 2
    for bc in (False, True):
        body = f"denseblock_param {{ numTransition: 2 growthRate: 2 use_BC: {str(bc).lower()} }}"
        blobs = [rng.normal(0, 0.3, (g, 4 * g if bc else c, 3, 3)) for c in widths]
        groups = [widths] + ([[4 * g] * 2] if bc else [])
        for k, group in enumerate(groups):
            bn = [[rng.uniform(0.5, 1.5, (1, c, 1, 1)) for c in group] for _ in range(2)]
            bn += [[rng.normal(0, 0.5, (1, c, 1, 1)) for c in group]]
            bn += [[rng.uniform(0.5, 2.0, (1, c, 1, 1)) for c in group]]
            if k:
                blobs += [rng.normal(0, 0.5, (4 * g, c, 1, 1)) for c in widths]
            blobs += [b for kind in bn for b in kind]
        run(tmp_path, L("DenseBlock", body), phase="TEST", params={"l": [*blobs, np.ones(1)]})


def test_every_type_that_computes_is_covered_or_refuses_backward():
    covered = set()
    for layers in CASES.values():
        covered |= {line.split('type: "')[1].split('"')[0] for line in layers.splitlines() if line}
    covered |= {
        "DenseBlock",
        "Convolution3D",
        "Pooling3D",
        "Log",
        "Embed",
        "EuclideanLoss",
    }  # the tests above; losses: tests/train/test_loss.py
    covered |= {
        "SoftmaxWithLoss",
        "SigmoidCrossEntropyLoss",
        "HingeLoss",
        "ContrastiveLoss",
        "InfogainLoss",
        "MultinomialLogisticLoss",
        "PriorBox",
        "DepthwiseConvolution",
        "ROIPooling",  # test_detection_forks_pooling above
        "PSROIPooling",
        "SPP",
        # the user's own backward: tests/converters/test_python_layer.py (PyTorch),
        # tests/reference/test_python_layer.py (float64, against central differences)
        "Python",
    }
    missing = []
    for layer_type in registry.supported_types("shape"):
        facts = registry.facts(layer_type)
        if layer_type in covered or facts.role == "data":
            continue
        if (
            facts.no_backward is not None
            and registry.lookup(layer_type, "reference_backward") is None
        ):
            continue  # Caffe has no backward: refused by name (tests/train/test_net.py)
        missing.append(layer_type)
    assert not missing, missing
