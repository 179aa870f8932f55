"""BatchNorm folding: same outputs as the unfolded graph, no normalisation layers left, and every
unsafe case left alone (with the reason in the graph's notes)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from caffe_compat.converters.onnx.export import to_onnx
from caffe_compat.converters.torch.model import CaffeNet
from caffe_compat.ir.graph import Graph
from caffe_compat.ir.load import load_net
from caffe_compat.passes.fold_batchnorm import fold_batchnorm, plan
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify.backends import run_onnxruntime, run_torch

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 5 dim: 9 dim: 11 } } }\n'


def conv_bn(
    name,
    bottom,
    top=None,
    conv="num_output: 6 kernel_size: 3 pad: 1 bias_term: false",
    bn="use_global_stats: true",
    scale=True,
):
    """Convolution + BatchNorm (+ Scale with bias), the normalisation layers in place."""
    top = top or name
    text = (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" convolution_param {{ {conv} }} }}\n'
        f'layer {{ name: "bn_{name}" type: "BatchNorm" bottom: "{top}" top: "{top}" batch_norm_param {{ {bn} }} }}\n'
    )
    if scale:
        text += f'layer {{ name: "scale_{name}" type: "Scale" bottom: "{top}" top: "{top}" scale_param {{ bias_term: true }} }}\n'
    return text


RESNET_STYLE = (
    INPUT
    + conv_bn("conv1", "data", conv="num_output: 8 kernel_size: 3 pad: 1 stride: 2")
    + 'layer { name: "conv1_relu" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
    + conv_bn("branch1", "conv1", conv="num_output: 12 kernel_size: 1 bias_term: false")
    + conv_bn("branch2a", "conv1", conv="num_output: 4 kernel_size: 1 bias_term: false")
    + 'layer { name: "branch2a_relu" type: "ReLU" bottom: "branch2a" top: "branch2a" }\n'
    + conv_bn("branch2b", "branch2a", conv="num_output: 4 kernel_size: 3 pad: 1 bias_term: false")
    + 'layer { name: "branch2b_relu" type: "ReLU" bottom: "branch2b" top: "branch2b" }\n'
    + conv_bn("branch2c", "branch2b", conv="num_output: 12 kernel_size: 1 bias_term: false")
    + 'layer { name: "res" type: "Eltwise" bottom: "branch1" bottom: "branch2c" top: "res" }\n'
    + 'layer { name: "res_relu" type: "ReLU" bottom: "res" top: "res" }\n'
    + 'layer { name: "pool" type: "Pooling" bottom: "res" top: "pool" pooling_param { pool: AVE global_pooling: true } }\n'
    # InnerProduct -> BatchNorm -> Scale -> Bias with distinct tops (not in place).
    + 'layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 7 } }\n'
    + 'layer { name: "bn_fc" type: "BatchNorm" bottom: "fc" top: "fc_bn" batch_norm_param { use_global_stats: true } }\n'
    + 'layer { name: "scale_fc" type: "Scale" bottom: "fc_bn" top: "fc_scaled" }\n'
    + 'layer { name: "bias_fc" type: "Bias" bottom: "fc_scaled" top: "fc_out" }\n'
    + 'layer { name: "prob" type: "Softmax" bottom: "fc_out" top: "prob" }\n'
)

MOBILENET_STYLE = (
    INPUT
    + conv_bn(
        "conv1",
        "data",
        conv="num_output: 6 kernel_size: 3 pad: 1 stride: 2 bias_term: false",
        bn="use_global_stats: true eps: 1e-5",
    )
    + 'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
    + conv_bn(
        "dw",
        "conv1",
        conv="num_output: 6 group: 6 kernel_size: 3 pad: 1 bias_term: false",
        bn="eps: 1e-5",
    )
    + 'layer { name: "relu_dw" type: "ReLU" bottom: "dw" top: "dw" }\n'
    + conv_bn(
        "alias_dw", "dw", conv="num_output: 6 kernel_size: 3 pad: 1 bias_term: false"
    ).replace('type: "Convolution"', 'type: "ConvolutionDepthwise"')
    + conv_bn("sep", "alias_dw", conv="num_output: 10 kernel_size: 1 bias_term: false")
    + 'layer { name: "relu_sep" type: "ReLU" bottom: "sep" top: "sep" }\n'
    + 'layer { name: "pool" type: "Pooling" bottom: "sep" top: "pool" pooling_param { pool: AVE global_pooling: true } }\n'
    + 'layer { name: "fc" type: "Convolution" bottom: "pool" top: "fc" convolution_param { num_output: 7 kernel_size: 1 } }\n'
    + 'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n'
)


def loaded_net(tmp_path, text, method="he", **options):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    loaded = load_net(path, **options)
    synthesize(loaded, seed=3, method=method)
    return loaded


def feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal((3, *s[1:])).astype(np.float32) for n, s in graph.inputs.items()}


def assert_consistent(graph: Graph) -> None:
    """The IR invariants a pass must keep: wiring in order, names, shapes and blob maps."""
    known = set(graph.inputs)
    names = [n.name for n in graph.nodes]
    assert len(names) == len(set(names))
    for node in graph.nodes:
        assert all(v in known for v in node.inputs), node.name
        known.update(node.outputs)
    values = set(graph.values)
    assert set(graph.shapes) == values
    assert set(graph.blob_of) == values
    assert set(graph.final.values()) <= values
    assert all(graph.blob_of[v] == b for b, v in graph.final.items())
    assert set(graph.outputs) <= values
    consumed = {v for n in graph.nodes for v in n.inputs}
    assert all(v not in consumed for v in graph.outputs)


def assert_same_values(before: Graph, after: Graph, rtol: float = 1e-5) -> None:
    """Every value both graphs still have agrees, in PyTorch and in ONNX Runtime."""
    shared = [v for v in after.values if v not in after.inputs]
    x = feeds(before)
    runs = [
        (run_torch(before, x, shared), run_torch(after, x, shared)),
        (
            run_onnxruntime(to_onnx(before, extra_outputs=shared).SerializeToString(), x),
            run_onnxruntime(to_onnx(after, extra_outputs=shared).SerializeToString(), x),
        ),
    ]
    for reference, folded in runs:
        for value in shared:
            scale = float(np.abs(reference[value]).max())
            error = float(np.abs(folded[value] - reference[value]).max())
            assert error <= rtol * max(scale, 1e-30), (value, error, scale)


def snapshot(graph: Graph):
    return (
        [(n.name, n.type, list(n.inputs), list(n.outputs), str(n.param)) for n in graph.nodes],
        [[b.copy() for b in n.blobs] for n in graph.nodes],
        copy.deepcopy((graph.inputs, graph.outputs, graph.shapes, graph.blob_of, graph.final)),
    )


def assert_unchanged(graph: Graph, before) -> None:
    after = snapshot(graph)
    assert after[0] == before[0] and after[2] == before[2]
    for old, new in zip(before[1], after[1]):
        assert all(np.array_equal(a, b) for a, b in zip(old, new))


@pytest.mark.parametrize("text", [RESNET_STYLE, MOBILENET_STYLE], ids=["resnet", "mobilenet"])
@pytest.mark.parametrize("method", ["he", "calibrated"])
def test_folded_graph_computes_the_same_values(tmp_path, text, method):
    graph = loaded_net(tmp_path, text, method=method).graph
    before = snapshot(graph)
    folded = fold_batchnorm(graph)
    assert_unchanged(graph, before)
    assert not {n.type for n in folded.nodes} & {"BatchNorm", "Scale", "Bias"}
    assert_consistent(folded)
    assert folded.outputs == graph.outputs
    assert_same_values(graph, folded)
    refusals = [note for note in folded.notes if note.startswith("left")]
    assert not refusals


def test_fused_layer_is_named_after_the_last_absorbed_layer(tmp_path):
    graph = loaded_net(tmp_path, RESNET_STYLE).graph
    folded = fold_batchnorm(graph)
    fused = folded.node("scale_branch1")
    assert fused.type == "Convolution"
    assert fused.inputs == ["conv1"] and fused.outputs == ["branch1"]
    assert fused.param.convolution_param.bias_term and len(fused.blobs) == 2
    assert list(fused.param.top) == ["branch1"] and fused.param.name == "scale_branch1"
    fc = folded.node("bias_fc")
    assert fc.type == "InnerProduct" and fc.outputs == ["fc_out"]
    assert "fc" not in folded.final and "fc_bn" not in folded.final
    assert folded.final["fc_out"] == "fc_out"
    folds, _ = plan(graph)
    assert ("fc", ("bn_fc", "scale_fc", "bias_fc")) in [(f.into, f.absorbed) for f in folds]
    assert any("folded bn_conv1, scale_conv1 into conv1" in note for note in folded.notes)
    assert CaffeNet(folded)  # builds


def test_any_chain_of_per_channel_affine_layers_after_batchnorm_folds(tmp_path):
    """What follows BatchNorm is read from the layers' ``affine`` facts, not a fixed order: a
    Bias before a Scale, then two Scales, after a transposed InnerProduct without a bias."""
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 6 transpose: true bias_term: false } }\n'
        + 'layer { name: "bn" type: "BatchNorm" bottom: "fc" top: "fc" batch_norm_param { use_global_stats: true } }\n'
        + 'layer { name: "bias" type: "Bias" bottom: "fc" top: "fc" }\n'
        + 'layer { name: "scale1" type: "Scale" bottom: "fc" top: "fc" }\n'
        + 'layer { name: "scale2" type: "Scale" bottom: "fc" top: "out" scale_param { bias_term: true } }\n'
    )
    graph = loaded_net(tmp_path, text).graph
    folded = fold_batchnorm(graph)
    assert [(n.name, n.type) for n in folded.nodes] == [("scale2", "InnerProduct")]
    fused = folded.node("scale2")
    assert fused.param.inner_product_param.bias_term and [b.shape for b in fused.blobs] == [
        (5 * 9 * 11, 6),
        (6,),
    ]
    assert_consistent(folded)
    assert_same_values(graph, folded)


def refused(graph: Graph, layer: str) -> str:
    folded = fold_batchnorm(graph)
    assert_consistent(folded)
    assert_same_values(graph, folded)
    assert layer in {n.name for n in folded.nodes}, f"{layer} was folded"
    (reason,) = [note for note in folded.notes if note.startswith(f"left {layer} unfolded")]
    return reason


def test_refused_when_the_convolution_output_is_read_elsewhere(tmp_path):
    text = (
        INPUT
        + conv_bn("c", "data", top="c_out", scale=False).replace(
            'top: "c_out" batch_norm_param', 'top: "normed" batch_norm_param'
        )
        + 'layer { name: "side" type: "ReLU" bottom: "c_out" top: "side" }\n'
        + 'layer { name: "sum" type: "Eltwise" bottom: "normed" bottom: "side" top: "sum" }\n'
    )
    graph = loaded_net(tmp_path, text).graph
    assert "also read by side" in refused(graph, "bn_c")


def test_refused_when_a_layer_reads_the_blob_before_batchnorm_rewrites_it_in_place(tmp_path):
    # "c" is read by "peek" between the convolution and the in-place BatchNorm: that reader sees
    # the raw convolution (value c@c), so the convolution cannot absorb the normalisation.
    text = (
        INPUT
        + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 6 kernel_size: 3 bias_term: false } }\n'
        + 'layer { name: "peek" type: "Pooling" bottom: "c" top: "peek" pooling_param { pool: MAX kernel_size: 2 } }\n'
        + 'layer { name: "bn_c" type: "BatchNorm" bottom: "c" top: "c" batch_norm_param { use_global_stats: true } }\n'
        + 'layer { name: "scale_c" type: "Scale" bottom: "c" top: "c" scale_param { bias_term: true } }\n'
    )
    graph = loaded_net(tmp_path, text).graph
    assert graph.consumers("c@c")[0].name == "peek"
    assert "also read by peek" in refused(graph, "bn_c")


@pytest.mark.parametrize(
    ("bn", "phase"),
    [("use_global_stats: false", "TEST"), ("", "TRAIN")],
    ids=["use_global_stats-false", "train-phase-default"],
)
def test_refused_when_batchnorm_uses_batch_statistics(tmp_path, bn, phase):
    graph = loaded_net(tmp_path, INPUT + conv_bn("c", "data", bn=bn), phase=phase).graph
    assert "batch statistics" in refused(graph, "bn_c")
    assert "scale_c" in {n.name for n in fold_batchnorm(graph).nodes}


def test_refused_when_batchnorm_follows_no_convolution(tmp_path):
    text = (
        INPUT
        + 'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: MAX kernel_size: 2 } }\n'
        + 'layer { name: "bn" type: "BatchNorm" bottom: "pool" top: "pool" batch_norm_param { use_global_stats: true } }\n'
    )
    assert "follows a Pooling layer" in refused(loaded_net(tmp_path, text).graph, "bn")


def test_refused_when_the_convolution_shares_weights_over_two_bottoms(tmp_path):
    text = (
        INPUT
        + 'layer { name: "c" type: "Convolution" bottom: "data" bottom: "data" top: "c1" top: "c2" convolution_param { num_output: 6 kernel_size: 3 } }\n'
        + 'layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "c1" batch_norm_param { use_global_stats: true } }\n'
    )
    assert "several bottoms" in refused(loaded_net(tmp_path, text).graph, "bn")


def test_scale_from_a_second_bottom_stays_while_batchnorm_folds(tmp_path):
    text = (
        INPUT
        + conv_bn("c", "data", scale=False)
        + 'layer { name: "gate" type: "Pooling" bottom: "data" top: "gate" pooling_param { pool: AVE kernel_size: 3 pad: 1 } }\n'
        + 'layer { name: "g" type: "Convolution" bottom: "gate" top: "g" convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }\n'
        + 'layer { name: "scale" type: "Scale" bottom: "c" bottom: "g" top: "out" scale_param { axis: 0 } }\n'
    )
    graph = loaded_net(tmp_path, text).graph
    folded = fold_batchnorm(graph)
    assert_consistent(folded)
    assert_same_values(graph, folded)
    types = {n.name: n.type for n in folded.nodes}
    assert "bn_c" in types and types["bn_c"] == "Convolution" and types["scale"] == "Scale"
