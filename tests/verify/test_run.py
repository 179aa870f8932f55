"""verify_loaded's typed options: a VerifyOptions object, the keywords naming its fields, and both
together (the keywords override) give the same report; given arrays run as they are."""

from __future__ import annotations

import numpy as np
import pytest
from _harness import net
from _user_layers import SHIFT_LAYER

from caffe_compat.errors import CaffeCompatError
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify import VerifyOptions, verify_loaded

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


def test_verify_names_fork_fields_it_skipped(tmp_path):
    """--allow-unknown-fields never changes a result silently: verify's report names each skip."""
    from caffe_compat.io.writer import definitions_only, write_caffemodel
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize
    from caffe_compat.verify import verify

    path = tmp_path / "n.prototxt"
    path.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 '
        "dim: 4 dim: 4 } } }\n"
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" relu_param { frob: 2 } }\n'
    )
    loaded = load_net(path, allow_unknown_fields=True)
    weights = tmp_path / "n.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded))
    report = verify(path, weights, allow_unknown_fields=True, devices=("cpu",), opencv=False)
    assert report.notes == [
        'skipped a field Caffe does not know (line 2, layer "r": caffe.ReLUParameter.frob)'
    ]
    assert "caffe.ReLUParameter.frob" in report.render()


def test_user_code_is_verified_without_onnx_runtime(tmp_path, monkeypatch):
    """A user's Python layer: ONNX cannot hold it, so ONNX Runtime is skipped (the report says
    why) and PyTorch is judged."""
    name = f"shift_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(SHIFT_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 '
        'dim: 3 dim: 3 } } }\nlayer { name: "s" type: "Python" bottom: "data" top: "s" '
        f'python_param {{ module: "{name}" layer: "Shift" }} }}\n'
    )
    loaded = load_net(prototxt)
    loaded.graph.node("s").blobs = [np.array([1.0, -2.0], np.float32)]
    report = verify_loaded(loaded, opencv=False, devices=("cpu",), progress=False)
    assert report.passed and report.comparisons
    assert report.backends["onnxruntime-cpu"].startswith('skipped: layer "s": Python layer')
    assert {c.backend for c in report.comparisons} == {"torch-cpu"}


def test_proposal_rows_and_their_row_concatenation_compare_as_sets():
    """Proposal's tops (also as SSH's or py-faster-rcnn's Python layer) and a Concat of them
    along the rows are row sets (verify/detections.align_row_sets); a Concat along another
    axis, or of anything else, is not."""
    from caffe_compat.ir.load import load_net_text
    from caffe_compat.verify.run import _row_sets

    python = (
        "python_param {{ module: '{}' layer: 'ProposalLayer' param_str: \"'feat_stride': 16\" }}"
    )
    text = (
        'input: "cls" input_shape { dim: 1 dim: 18 dim: 4 dim: 4 }\n'
        'input: "bbox" input_shape { dim: 1 dim: 36 dim: 4 dim: 4 }\n'
        'input: "im_info" input_shape { dim: 1 dim: 3 }\n'
        'layer { name: "a" type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "im_info" '
        'top: "ra" top: "sa" }\n'
        'layer { name: "b" type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" '
        'top: "rb" ' + python.format("rpn.proposal_layer") + " }\n"
        'layer { name: "rows" type: "Concat" bottom: "ra" bottom: "rb" top: "rows" '
        "concat_param { axis: 0 } }\n"
        'layer { name: "cols" type: "Concat" bottom: "ra" bottom: "rb" top: "cols" '
        "concat_param { axis: 1 } }\n"
    )
    graph = load_net_text(text).graph
    assert _row_sets(graph) == {"ra", "sa", "rb", "rows"}


def test_proposal_rois_get_no_argmax_check(tmp_path):
    """ROI rows hold boxes, not class scores: verify compares them as a row set and takes no
    argmax agreement or class variety from them (two clipped corners tie)."""
    path = tmp_path / "rpn.prototxt"
    path.write_text(
        'input: "cls" input_shape { dim: 1 dim: 18 dim: 4 dim: 4 }\n'
        'input: "bbox" input_shape { dim: 1 dim: 36 dim: 4 dim: 4 }\n'
        'input: "im_info" input_shape { dim: 1 dim: 3 }\n'
        'layer { name: "p" type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "im_info" '
        'top: "rois" proposal_param { min_size: 0 } }\n'
    )
    report = verify_loaded(
        load_net(path), batch=1, devices=("cpu",), against=("float64",), progress=False
    )
    assert report.passed and not report.argmax and "rois" not in report.distinct_classes
    assert any(c.value == "rois" for c in report.comparisons)


def test_each_back_end_is_compared_and_dropped_before_the_next_runs(small_net, monkeypatch):
    """Verify holds one back end's values at a time: when ONNX Runtime starts, no array the
    PyTorch model produced is alive, and the report has every row of both."""
    import weakref

    from caffe_compat.verify import backends

    prototxt, weights = small_net
    loaded = load_net(prototxt, weights)
    produced: dict[str, list[weakref.ref]] = {}
    alive_at_start: dict[str, int] = {}

    def tracked(name, run):
        def wrapper(*args, **kwargs):
            alive_at_start[name] = sum(r() is not None for refs in produced.values() for r in refs)
            out = run(*args, **kwargs)
            produced[name] = [weakref.ref(a) for a in out.values()]
            return out

        return wrapper

    monkeypatch.setattr(backends, "run_torch", tracked("torch", backends.run_torch))
    monkeypatch.setattr(backends, "run_onnxruntime", tracked("ort", backends.run_onnxruntime))
    report = verify_loaded(loaded, batch=2, devices=("cpu",), against=("float64",), progress=False)
    assert alive_at_start == {"torch": 0, "ort": 0}
    assert len(produced["torch"]) >= 4  # every value came back, and was then dropped
    assert all(r() is None for refs in produced.values() for r in refs)
    rows = {(c.backend, c.value) for c in report.comparisons}
    assert {b for b, _ in rows} == {"torch-cpu", "onnxruntime-cpu"} and report.passed
    assert len(rows) == len(report.comparisons) == 2 * len(produced["torch"])


def test_the_batch_is_planned_for_the_judges_and_one_back_end(small_net):
    """The plan counts, per phase, what is alive: the float64 judge running (its values in
    float64, one layer's weights, scratch and two temporaries of its top in float64), the ONNX model written (the initializers, the largest once more) and
    opened (its tensors, the largest once more), a back end running (the weights twice, the judge's values in
    float32 and its own, one layer's scratch); not six copies of every value at once."""
    from caffe_compat.budget import footprint
    from caffe_compat.verify.run import plan_verification

    prototxt, weights = small_net
    loaded = load_net(prototxt, weights)
    need = footprint(loaded.graph, loaded.inference.params)
    assert need.fixed == 0 and need.scratch_per_item > 0
    params, largest = need.params, need.largest_params
    per, scratch, top = need.per_item, need.scratch_per_item, need.largest_per_item
    budget = int(2 * params + 2 * largest + 7 * (2 * per + 2 * scratch + 4 * top)) + 1
    by_phase = {
        "float64 judge": (budget - params - 2 * largest) // (2 * per + 2 * scratch + 4 * top),
        "PyTorch, ONNX Runtime": (budget - 2 * params) // (2 * per + scratch),
        "writing the ONNX model": (budget - 2 * params - largest) // per,
        "opening ONNX Runtime": (budget - 2 * params - largest) // per,
    }
    expected = int(min(min(by_phase.values()), 20))
    old = int((budget - 3 * params) // (6 * per + scratch))  # six copies of every value
    assert 1 < expected < 20 and old < expected
    options = VerifyOptions(against=("float64",), max_memory=budget, batch=20, progress=False)
    assert plan_verification(loaded, options).batch == expected


WIDE = net(
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
    "convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }\n"
    'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }\n'
    'layer { name: "score" type: "Convolution" bottom: "conv" top: "score" '
    "convolution_param { num_output: 2 kernel_size: 1 } }\n",
    c=3,
    h=48,
    w=48,
)

# Weights far over the values: OpenCV's own copies of them do not fit where the rest does.
HEAVY = net(
    'layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1" '
    "inner_product_param { num_output: 1024 } }\n"
    'layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" '
    "inner_product_param { num_output: 3 } }\n",
    c=64,
    h=2,
    w=2,
)


@pytest.mark.parametrize(("scope", "text"), [("net outputs", WIDE), ("none", HEAVY)])
def test_opencv_is_asked_for_less_where_every_value_does_not_fit(tmp_path, scope, text):
    """OpenCV is a cross-check: where its every-value phase (its blobs, its outputs and our
    copies: three of every value) does not fit at batch 1, it is asked for the net's outputs
    (one copy bounds its reused blobs), or left out; the float64 judge still judges, and the
    report says why. Named as a judge, OpenCV keeps the budget's error line."""
    from caffe_compat.budget import footprint
    from caffe_compat.errors import MemoryBudgetError
    from caffe_compat.verify.opencv import opencv_caffe_available
    from caffe_compat.verify.run import OPENCV_SCOPES, plan_verification, verification_phases

    if opencv_caffe_available() is not None:
        pytest.skip(f"needs OpenCV's Caffe importer: {opencv_caffe_available()}")
    prototxt, weights = tmp_path / "wide.prototxt", tmp_path / "wide.caffemodel"
    prototxt.write_text(text)
    loaded = load_net(prototxt)
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=5))
    loaded = load_net(prototxt, weights)
    need = footprint(loaded.graph, loaded.inference.params)

    def batch_one(scope: str) -> float:  # the largest phase at batch 1, as plan_batch counts it
        phases = verification_phases(
            ("float64", "opencv"),
            ("torch",),
            opencv=True,
            stored=False,
            given_model=False,
            opencv_scope=scope,
        )
        return max(
            p.params * need.params
            + p.largest * need.largest_params
            + max(p.values, 1) * (need.fixed + need.per_item)
            + p.scratch * need.scratch_per_item
            + p.tops * need.largest_per_item
            for p in phases
        )

    every, outputs, without = (batch_one(s) for s in OPENCV_SCOPES)
    low, high = (outputs, every) if scope == "net outputs" else (without, outputs)
    assert low < high
    budget = int((low + high) / 2)
    options = VerifyOptions(max_memory=budget, batch=1, progress=False, backends=("torch",))
    plan = plan_verification(loaded, options)
    assert plan.batch == 1 and plan.opencv_scope == scope
    assert (
        "every value would not fit" in plan.opencv_note
        and "over the memory budget" in plan.opencv_note
    )
    report = verify_loaded(loaded, options, weights_path=str(weights))
    assert report.passed
    status = report.references["opencv"]
    if scope == "none":
        assert status.startswith("skipped: OpenCV left out")
        assert {c.reference for c in report.comparisons} == {"float64"}
    else:
        assert "outputs only" in status
        opencv = {c.value for c in report.comparisons if c.reference == "opencv"}
        assert opencv == set(loaded.graph.outputs)
    with pytest.raises(MemoryBudgetError):
        plan_verification(
            loaded, VerifyOptions(max_memory=budget, batch=1, against=("float64", "opencv"))
        )


def test_a_net_too_big_at_its_declared_size_is_verified_smaller(tmp_path):
    """One item of a fully convolutional net over the budget: verify runs at the height and
    width halved (the same parameters), and says so; a net whose InnerProduct follows the input
    size, or an input size the caller chose, keeps the declared size's error line."""
    from caffe_compat.budget import footprint
    from caffe_compat.errors import MemoryBudgetError
    from caffe_compat.verify import verify

    def files(name: str, text: str):
        prototxt, weights = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
        prototxt.write_text(text)
        loaded = load_net(prototxt)
        write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=5))
        return prototxt, weights, footprint(loaded.graph, loaded.inference.params)

    wide = WIDE.replace("dim: 48 dim: 48", "dim: 64 dim: 64")
    assert wide != WIDE
    prototxt, weights, need = files("wide", wide)
    # A back end's phase at batch 1: both weights copies, two copies of every value, a scratch.
    budget = int(4 * need.params + 0.9 * (2 * need.per_item + 2 * need.scratch_per_item))
    options = {"max_memory": budget, "batch": 1, "progress": False, "opencv": False}
    report = verify(prototxt, weights, **options)
    assert report.passed and report.batch == 1
    assert any("verified at the input size divided by 2: data 2x3x32x32" in n for n in report.notes)
    compared = {c.value: c for c in report.comparisons if c.reference == "float64"}
    assert "score" in compared
    # At a size the caller chose, the values are streamed instead (and here do not fit either).
    with pytest.raises(MemoryBudgetError, match=r"values streamed"):
        verify(prototxt, weights, input_shapes={"data": (1, 3, 64, 64)}, **options)

    dense = wide.replace(
        'type: "Convolution" bottom: "conv" top: "score"',
        'type: "InnerProduct" bottom: "conv" top: "score"',
    )
    dense = dense.replace(
        "convolution_param { num_output: 2 kernel_size: 1 }",
        "inner_product_param { num_output: 2 }",
    )
    prototxt, weights, need = files("dense", dense)
    budget = int(4 * need.params + 0.9 * (2 * need.per_item + 2 * need.scratch_per_item))
    # never smaller: its InnerProduct, now read in float32 slabs by the judge, fits as it is
    dense_report = verify(prototxt, weights, **{**options, "max_memory": budget})
    assert dense_report.passed and not any("divided by" in n for n in dense_report.notes)


# A chain whose values together are far more than the few alive at once, ending in an
# InnerProduct whose width follows the input size: no smaller size keeps its weights.
DEEP = net(
    "".join(
        f'layer {{ name: "c{i}" type: "Convolution" bottom: "{"data" if i == 0 else f"c{i - 1}"}" '
        f'top: "c{i}" convolution_param {{ num_output: 8 kernel_size: 1 }} }}\n'
        for i in range(12)
    )
    + 'layer { name: "fc" type: "InnerProduct" bottom: "c11" top: "fc" '
    "inner_product_param { num_output: 3 } }\n",
    c=3,
    h=32,
    w=32,
)


def test_a_net_whose_values_do_not_fit_together_is_verified_streamed(tmp_path):
    """Over the budget at batch 1 and not runnable smaller: verify streams the judge's values
    to disk and runs each back end per group of values, at the declared size; it says so."""
    from caffe_compat.budget import footprint
    from caffe_compat.verify import verify
    from caffe_compat.verify.run import _phase_bytes, verification_phases

    prototxt, weights = tmp_path / "deep.prototxt", tmp_path / "deep.caffemodel"
    prototxt.write_text(DEEP)
    loaded = load_net(prototxt)
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=5))
    need = footprint(loaded.graph, loaded.inference.params)
    sides = {"opencv": False, "stored": False, "given_model": False}
    judges, backends = ("float64",), ("torch", "onnxruntime")

    def least(streamed: bool) -> float:
        phases = verification_phases(judges, backends, **sides, streamed=streamed)
        extra = 2 * need.largest_per_item if streamed else 0.0  # a group and a judge value
        return max(_phase_bytes(p, need, 1) + (extra if p.backend else 0.0) for p in phases)

    assert least(True) < least(False) / 2
    budget = int((least(True) + least(False)) / 2)
    options = {"max_memory": budget, "batch": 1, "progress": False, "opencv": False}
    report = verify(prototxt, weights, **options)
    assert report.passed and report.batch == 1
    assert any(
        n.startswith("values streamed: the float64 judge wrote its 13 values") for n in report.notes
    )
    assert not any("divided by" in n for n in report.notes)
    compared = {c.value for c in report.comparisons}
    assert compared == {*(f"c{i}" for i in range(12)), "fc"}
    assert {c.backend for c in report.comparisons} == {"torch-cpu", "onnxruntime-cpu"}


def test_a_net_that_fits_only_smaller_and_streamed_is_verified_so(tmp_path):
    """Over the budget in memory at every size, and streamed at the declared size: verify
    streams the values at the input size halved (Dilation's KITTI front end), and says both."""
    from caffe_compat.budget import footprint
    from caffe_compat.verify import verify
    from caffe_compat.verify.run import _phase_bytes, verification_phases

    convolutional = DEEP.replace(
        'type: "InnerProduct" bottom: "c11" top: "fc" inner_product_param { num_output: 3 }',
        'type: "Convolution" bottom: "c11" top: "fc" '
        "convolution_param { num_output: 3 kernel_size: 1 }",
    ).replace("dim: 32 dim: 32", "dim: 64 dim: 64")
    assert "InnerProduct" not in convolutional and "dim: 64" in convolutional
    prototxt, weights = tmp_path / "deep.prototxt", tmp_path / "deep.caffemodel"
    prototxt.write_text(convolutional)
    loaded = load_net(prototxt)
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=5))
    sides = {"opencv": False, "stored": False, "given_model": False}
    judges, backends = ("float64",), ("torch", "onnxruntime")

    def least(side: int, streamed: bool) -> float:
        graph = load_net(prototxt, input_shapes={"data": (2, 3, side, side)})
        need = footprint(graph.graph, graph.inference.params)
        phases = verification_phases(judges, backends, **sides, streamed=streamed)
        extra = 2 * need.largest_per_item if streamed else 0.0  # a group and a judge value
        return max(_phase_bytes(p, need, 1) + (extra if p.backend else 0.0) for p in phases)

    fits = least(32, True)
    over = min(least(32, False), least(64, True))
    assert fits < over
    options = {"max_memory": int((fits + over) / 2), "batch": 1, "progress": False}
    report = verify(prototxt, weights, **options, opencv=False)
    assert report.passed and report.batch == 1
    assert any("verified at the input size divided by 2: data 2x3x32x32" in n for n in report.notes)
    assert any(n.startswith("values streamed: the float64 judge wrote") for n in report.notes)
    assert {c.value for c in report.comparisons} == {*(f"c{i}" for i in range(12)), "fc"}


def test_an_allocation_failing_at_the_declared_size_retries_smaller(tmp_path, monkeypatch):
    """An allocation that fails anyway (the plan fitted, the library took more) is a memory
    failure like the budget's: verify runs again at a smaller size, after letting the failed
    run go; any other error stays what it is."""
    from caffe_compat.verify import backends, verify

    prototxt, weights = tmp_path / "wide.prototxt", tmp_path / "wide.caffemodel"
    prototxt.write_text(WIDE)
    loaded = load_net(prototxt)
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=5))
    real = backends.run_torch

    def short_of_memory(graph, feeds, *args, **kwargs):
        if next(iter(feeds.values())).shape[-1] == 48:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")
        return real(graph, feeds, *args, **kwargs)

    monkeypatch.setattr(backends, "run_torch", short_of_memory)
    options = {"batch": 1, "progress": False, "opencv": False}
    report = verify(prototxt, weights, **options)
    assert report.passed
    assert any("divided by 2: data 2x3x16x16" in n and "out of memory" in n for n in report.notes)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(backends, "run_torch", broken)
    with pytest.raises(RuntimeError, match="a bug, not memory"):
        verify(prototxt, weights, **options)


def test_a_streamed_verification_gives_the_rows_of_one_in_memory(small_net, monkeypatch, tmp_path):
    """Streamed (the judge's values on disk, each back end run once per group of values, here
    one value per run): the same rows, verdicts and argmax agreement as in memory, and the
    temporary files are gone afterwards."""
    import tempfile

    from caffe_compat.verify import backends, run

    prototxt, weights = small_net
    loaded = load_net(prototxt, weights)
    options = VerifyOptions(batch=3, devices=("cpu",), progress=False, opencv=False)
    in_memory = verify_loaded(loaded, options)
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    monkeypatch.setattr(run, "_group_room", lambda *args: 1.0)
    cut = []
    whole = backends.onnx_segments

    def segments(*args):
        cut.append(whole(*args))
        return cut[-1]

    monkeypatch.setattr(backends, "onnx_segments", segments)
    streamed = verify_loaded(loaded, options, streamed=True)
    # ONNX Runtime ran the model cut in four pieces, each fed the value before it
    assert [(s.needs, s.returns) for s in cut[0]] == [
        ((), ("conv@conv",)),
        (("conv@conv",), ("conv",)),
        (("conv",), ("fc",)),
        (("fc",), ("prob",)),
    ]
    assert in_memory.passed and streamed.passed
    assert _rows(streamed) == _rows(in_memory) and len(_rows(streamed)) == 2 * 4
    assert streamed.argmax == in_memory.argmax
    assert streamed.distinct_classes == in_memory.distinct_classes
    assert list(streamed.backends) == list(in_memory.backends)
    assert any("returned its values in 4 group(s)" in n for n in streamed.notes)
    assert not any(spill.iterdir())  # the judge's files are removed
    with pytest.raises(CaffeCompatError, match="stored arrays or a given ONNX model"):
        verify_loaded(loaded, options, streamed=True, onnx_model=b"model")


def test_values_are_grouped_in_order_within_the_room(small_net):
    from caffe_compat.budget import value_sizes
    from caffe_compat.verify.run import value_groups

    prototxt, _ = small_net
    loaded = load_net(prototxt)
    values = [v for v in loaded.graph.values if v not in loaded.graph.inputs]
    sizes = value_sizes(loaded.graph, 2)
    room = max(sizes[v] for v in values)
    groups = value_groups(loaded, values, 2, room)
    assert [v for g in groups for v in g] == values
    assert all(sum(sizes[v] for v in g) <= room for g in groups) and len(groups) > 1
    assert value_groups(loaded, values, 2, 1.0) == [[v] for v in values]
    assert value_groups(loaded, values, 2, float("inf")) == [values]


def test_a_cancelling_batchnorm_is_judged_by_the_judges_own_movement(tmp_path):
    """A convolution summing to about 2,800 that BatchNorm centres to about 3 loses float32
    digits in the subtraction: PyTorch's row is past the static growth limit (its error is
    relative to the convolution, not to BatchNorm's small output). The float64 judge rerun
    with float32-rounded weights moves as much, so that row passes on the judge's movement."""
    from caffe_compat.reference import forward

    text = net(
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        "convolution_param { num_output: 2 kernel_size: 3 } }\n"
        'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "bn" '
        "batch_norm_param { use_global_stats: true eps: 0 } }\n",
        c=3,
    )
    (tmp_path / "n.prototxt").write_text(text)
    layers = definitions_only(load_net(tmp_path / "n.prototxt").net.layer)
    rng = np.random.default_rng(0)
    feeds = {"data": rng.uniform(100, 101, (4, 3, 7, 9)).astype(np.float32)}
    conv = [rng.uniform(0.5, 1.5, (2, 3, 3, 3)).astype(np.float32), np.zeros(2, np.float32)]
    identity = [np.zeros(2, np.float32), np.ones(2, np.float32), np.ones(1, np.float32)]
    write_caffemodel(tmp_path / "n.caffemodel", layers, {"conv": conv, "bn": identity})
    loaded = load_net(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    out = forward(loaded, feeds, outputs=["conv"])["conv"]
    stats = [out.mean(axis=(0, 2, 3)), out.var(axis=(0, 2, 3)), np.ones(1)]
    stats = [s.astype(np.float32) for s in stats]
    write_caffemodel(tmp_path / "n.caffemodel", layers, {"conv": conv, "bn": stats})
    loaded = load_net(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    report = verify_loaded(
        loaded,
        feeds=feeds,
        devices=("cpu",),
        against=("float64",),
        backends=("torch",),
        progress=False,
    )
    (row,) = [c for c in report.comparisons if c.value == "bn" and c.backend == "torch-cpu"]
    assert "judge's own movement" in row.note and row.max_abs > 1e-4 * row.max_ref
    assert report.passed


def test_folders_left_by_killed_verifications_are_removed(tmp_path, monkeypatch):
    """A verification killed by a timeout leaves its temporary folder (gigabytes in streamed
    mode); the next one removes folders of ours whose process is gone, and no other."""
    import os
    import subprocess
    import sys
    import tempfile

    from caffe_compat.verify.opencv import TEMP_PREFIX, remove_orphans, temp_folder

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(gone.stdout)
    orphan = tmp_path / f"{TEMP_PREFIX}{dead}-abc"
    (orphan / "float64").mkdir(parents=True)
    (orphan / "float64" / "0.npy").write_bytes(b"x" * 10)
    alive = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-def"
    alive.mkdir()
    other = tmp_path / "caffe-compat-verify-notapid"
    other.mkdir()
    unrelated = tmp_path / "something-else-1"
    unrelated.mkdir()
    assert remove_orphans(str(tmp_path)) == [str(orphan)]
    assert not orphan.exists() and alive.exists() and other.exists() and unrelated.exists()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with temp_folder() as made:
        assert os.path.basename(made).startswith(f"{TEMP_PREFIX}{os.getpid()}-")


def test_the_verification_session_keeps_no_arena_pattern_or_packed_weights(small_net):
    """ONNX Runtime for one verification run: no arena, no memory pattern, no pre-packed copy
    of the weights (FCN-32s' session opens under a 4 GiB cap only so)."""
    from caffe_compat.converters.onnx.export import to_onnx_bytes
    from caffe_compat.verify.backends import open_onnxruntime

    prototxt, weights = small_net
    opened = open_onnxruntime(to_onnx_bytes(load_net(prototxt, weights).graph))
    options = opened.get_session_options()
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
    assert options.get_session_config_entry("session.disable_prepacking") == "1"


def test_a_top_class_chosen_otherwise_at_a_near_tie_is_not_a_disagreement():
    """Two classes whose judge scores lie within float32 error of each other: a back end that
    picks the other one agrees at a near-tie; a clear winner picked otherwise still fails."""
    from caffe_compat.verify.compare import Report, Tolerance
    from caffe_compat.verify.run import _argmax_agreement

    judge = {"prob": np.array([[0.4, 0.4 + 1e-6, 0.2], [0.1, 0.8, 0.1]])}
    tied = {"prob": np.array([[0.4 + 2e-6, 0.4, 0.2], [0.1, 0.8, 0.1]], np.float32)}
    report = Report(inputs="x", batch=2)
    _argmax_agreement(["prob"], "torch-cpu", tied, "float64", judge, report, Tolerance())
    (row,) = report.argmax
    assert (row.agree, row.ties, row.total, row.passed) == (1, 1, 2, True)
    assert "1/2 agree (+1 at near-ties) ok" in report.render()
    wrong = {"prob": np.array([[0.4, 0.4, 0.2], [0.8, 0.1, 0.1]], np.float32)}
    report = Report(inputs="x", batch=2)
    _argmax_agreement(["prob"], "torch-cpu", wrong, "float64", judge, report, Tolerance())
    assert not report.argmax[0].passed and report.argmax[0].ties == 1


def test_onnx_runtime_failing_to_open_stops_the_smaller_sizes(tmp_path, monkeypatch):
    """ONNX Runtime out of memory while opening the whole model fails at every input size
    (its weights): verify stops shrinking after the first smaller size and streams instead,
    whose pieces open one group of layers each; the last error is one memory line."""
    from caffe_compat.errors import MemoryBudgetError
    from caffe_compat.verify import backends, verify

    prototxt, weights = tmp_path / "wide.prototxt", tmp_path / "wide.caffemodel"
    prototxt.write_text(WIDE)
    loaded = load_net(prototxt)
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=5))
    sizes = []

    def cannot_open(model, feeds, *args, **kwargs):
        sizes.append(next(iter(feeds.values())).shape[-1])
        raise RuntimeError(
            "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: "
            "std::bad_alloc"
        )

    monkeypatch.setattr(backends, "run_onnxruntime", cannot_open)
    with pytest.raises(MemoryBudgetError, match="out of memory while"):
        verify(prototxt, weights, batch=1, progress=False, opencv=False)
    assert sizes == [48, 16, 48]  # declared, the first smaller size, then streamed: no more


def test_smaller_sizes_keep_the_power_of_two_and_stop_where_none_is_smaller():
    from caffe_compat.verify.run import _smaller

    assert _smaller({"data": (1, 3, 608, 608)}, 2) == {"data": (1, 3, 288, 288)}
    assert _smaller({"data": (1, 3, 227, 227)}, 2) == {"data": (1, 3, 114, 114)}
    assert _smaller({"data": (2, 3, 32, 32)}, 2) == {}  # 32 keeps 32: the same size again
    assert _smaller({"data": (1, 3, 20, 20)}, 2) == {}  # under SMALLEST_SIDE


def test_a_streamed_fallback_takes_at_most_two_items():
    """Streamed, every item's values go through disk once per back end and group: the
    fallback keeps the batch small (DeepLab-ResNet's 11 items wrote 16.6 GiB)."""
    from caffe_compat.verify.run import STREAMED_BATCH, _streamed_options

    assert STREAMED_BATCH == 2
    assert _streamed_options({"batch": 20, "progress": False}) == {
        "batch": 2,
        "progress": False,
        "streamed": True,
    }
    assert _streamed_options({"batch": 1})["batch"] == 1
    assert _streamed_options({})["batch"] == 2
