"""The orchestrators (verify, convert, the Ray driver, the application's commands) stay short
enough to hold in one's head, and their typed option objects mean the same as the keywords they
replaced."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from _harness import net

from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify import VerifyOptions, verify_loaded

ROOT = Path(__file__).resolve().parents[1] / "caffe_compat"
ORCHESTRATION = [
    "verify/run.py",
    "tools/convert.py",
    "app/scale.py",
    "app/scale_session.py",
    "app/scale_stages.py",
    "app/scale_output.py",
    "app/settings.py",
    "app/predictor.py",
    "app/evaluate.py",
    "cli/predict.py",
    "cli/_scale.py",
    "cli/_models.py",
    "cli/evaluate.py",
    "cli/verify.py",
]
MAX_LINES = 60


@pytest.mark.parametrize("module", ORCHESTRATION)
def test_no_function_over_sixty_lines(module):
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]
    assert not long, f"{module}: {', '.join(long)}; split them into plan / run / report steps"


def test_the_length_check_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    tree = ast.parse(f"def f():\n{body}\n")
    (node,) = tree.body
    assert node.end_lineno - node.lineno + 1 == MAX_LINES + 1


NET = net(
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
    "convolution_param { num_output: 4 kernel_size: 3 } }\n"
    'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }\n'
    'layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" '
    "inner_product_param { num_output: 3 } }\n"
    'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n',
    c=3,
)


@pytest.fixture
def small_net(tmp_path):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(NET)
    loaded = load_net(prototxt)
    weights = tmp_path / "net.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=5))
    return prototxt, weights


def _rows(report) -> list[tuple]:
    return [(c.backend, c.reference, c.value, c.max_abs) for c in report.comparisons]


def test_verify_options_object_and_keywords_agree(small_net):
    prototxt, weights = small_net
    loaded = load_net(prototxt, weights)
    keywords = {"batch": 3, "seed": 7, "devices": ("cpu",), "against": ("float64",)}
    keywords.update(progress=False, weights_path=str(weights))
    by_keywords = verify_loaded(loaded, **keywords)
    options = VerifyOptions(**keywords)
    by_options = verify_loaded(loaded, options)
    overridden = verify_loaded(loaded, options, batch=2)
    assert by_keywords.passed and by_options.passed and overridden.passed
    assert _rows(by_keywords) == _rows(by_options) and by_options.batch == 3
    assert overridden.batch == 2 and options.batch == 3  # the object itself is unchanged
    assert set(by_options.references) == {"float64", "opencv"}
    assert by_options.references["opencv"] == "skipped: not asked for"
    feeds = {"data": np.random.default_rng(1).uniform(0, 255, (4, 3, 7, 9)).astype(np.float32)}
    given = verify_loaded(loaded, options, feeds=feeds)
    assert given.batch == 4 and given.inputs == "given arrays"
    with pytest.raises(TypeError):
        verify_loaded(loaded, options, batches=2)


def test_convert_plan_then_run(small_net, tmp_path):
    pytest.importorskip("onnx")
    from caffe_compat.errors import CaffeCompatError
    from caffe_compat.tools.convert import ConvertOptions, convert, plan_conversion

    prototxt, weights = small_net
    prefix = tmp_path / "out" / "small"
    prefix.parent.mkdir()
    plan = plan_conversion(weights, ConvertOptions(out_prefix=prefix, targets=("onnx",)))
    assert plan.paths == {"onnx": prefix.with_name("small.onnx")}
    assert plan.steps == ("read", "preflight", "build_onnx", "check", "write")
    result = convert(prototxt, weights, out_prefix=prefix, targets=["onnx"], progress=False)
    assert set(result.timings) == set(plan.steps) and result.outputs == plan.paths
    assert result.report is not None and result.report.passed
    with pytest.raises(CaffeCompatError, match="refusing to overwrite"):
        plan_conversion(weights, ConvertOptions(out_prefix=prefix, targets=("onnx",)))
    with pytest.raises(CaffeCompatError, match="unknown target"):
        plan_conversion(weights, ConvertOptions(targets=("caffe2",)))
