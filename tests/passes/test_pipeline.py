"""``optimize``: what ``convert --optimize`` calls. A new graph, checked against OpenCV 4 reading
the original (unfolded) files, so the fused layers' values are compared by layer name."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.passes import optimize
from caffe_compat.tools.convert import convert
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify import verify_loaded

from .test_fold_batchnorm import RESNET_STYLE, assert_consistent

# OpenCV 4 has no Bias layer: the same net with the InnerProduct's chain ending at Scale.
NET = RESNET_STYLE.replace(
    'layer { name: "bias_fc" type: "Bias" bottom: "fc_scaled" top: "fc_out" }\n', ""
).replace('bottom: "fc_out" top: "prob"', 'bottom: "fc_scaled" top: "prob"')


def files(tmp_path):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(NET)
    loaded = load_net(prototxt)
    weights = tmp_path / "net.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=1))
    return prototxt, weights


def test_optimize_returns_a_new_folded_graph(tmp_path):
    prototxt, weights = files(tmp_path)
    graph = load_net(prototxt, weights).graph
    kinds = [n.type for n in graph.nodes]
    optimized = optimize(graph)
    assert optimized is not graph and [n.type for n in graph.nodes] == kinds
    assert "BatchNorm" not in {n.type for n in optimized.nodes}
    assert_consistent(optimized)


def test_optimized_graph_passes_verify_on_the_original_files(tmp_path, judge):
    prototxt, weights = files(tmp_path)
    loaded = load_net(prototxt, weights)
    optimized = dataclasses.replace(loaded, graph=optimize(loaded.graph))
    report = verify_loaded(optimized, weights_path=str(weights), batch=4, devices=("cpu",))
    assert report.passed, report.render(all_rows=False)
    compared = {c.value for c in report.comparisons if c.reference == judge}
    assert {"branch1", "conv1", "fc_scaled", "prob"} <= compared  # fused outputs included


def test_convert_with_optimize_writes_a_model_without_normalisation_ops(tmp_path):
    prototxt, weights = files(tmp_path)
    plain = convert(prototxt, weights, out_prefix=tmp_path / "plain", targets=["onnx"])
    folded = convert(
        prototxt, weights, out_prefix=tmp_path / "folded", targets=["onnx"], optimize=True
    )
    assert plain.report.passed and folded.report.passed
    ops_plain = [n.op_type for n in onnx.load(plain.outputs["onnx"]).graph.node]
    ops_folded = [n.op_type for n in onnx.load(folded.outputs["onnx"]).graph.node]
    assert ops_folded.count("Conv") == ops_plain.count("Conv") and len(ops_folded) < len(ops_plain)
    assert not {"BatchNormalization", "Div", "Sub"} & set(ops_folded)
    assert np.isfinite(folded.report.comparisons[0].max_abs)
