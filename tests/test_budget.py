"""The memory budget: sizes parse, the default follows what is available, estimates grow with
the net, check batches shrink to fit, and over-budget steps stop in one line before allocating
(verify, convert and synth through the API and the CLI), leaving no file behind."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat import budget
from caffe_compat.budget import Budget, footprint, parse_size, plan_batch, resolve
from caffe_compat.cli.main import main
from caffe_compat.errors import CaffeCompatError, MemoryBudgetError
from caffe_compat.io import write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize

SMALL = """
name: "small"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
# 1 x 3 x 4000 x 4000 in, 16 x 4000 x 4000 out: within Caffe's blob limit, about 1.3 GB of values.
BIG_VALUES = """
input: "data" input_dim: 1 input_dim: 3 input_dim: 4000 input_dim: 4000
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
"""
# 25 million weights (95 MiB) behind a tiny input.
BIG_WEIGHTS = """
input: "data" input_dim: 1 input_dim: 4 input_dim: 100 input_dim: 100
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 625 } }
"""
# Legal in Caffe, but ceil rounding with a stride of 100000 pads the input by ~100000 per axis.
HUGE_STRIDE = """
input: "data" input_dim: 1 input_dim: 3 input_dim: 10 input_dim: 10
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 100000 } }
"""


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def cli_error(capsys, *args) -> str:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2G", 2 * 2**30),
        ("512M", 512 * 2**20),
        ("1.5GiB", 3 * 2**29),
        ("300000", 300000),
        ("64k", 65536),
        (1000, 1000),
        ("2 gb", 2 * 2**30),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "2X", "1e9"])
def test_parse_size_refuses(text):
    with pytest.raises(CaffeCompatError, match="memory budget"):
        parse_size(text)


def test_default_budget_is_half_of_the_least_shared_memory(monkeypatch):
    from caffe_compat import headroom

    monkeypatch.setattr(headroom, "physical", lambda: headroom.Limit(8 * 2**30, "MemAvailable"))
    monkeypatch.setattr(
        headroom, "cgroup", lambda: headroom.Limit(6 * 2**30, "the cgroup's", "cgroup")
    )
    monkeypatch.setattr(headroom, "address_space", lambda: None)
    made = resolve()
    assert made.limit == 3 * 2**30
    assert "cgroup" in made.origin and "6 GiB" in made.origin
    assert resolve("1G").limit == 2**30 and resolve(Budget(5, "x")).limit == 5


def test_private_address_space_gets_a_larger_share(monkeypatch):
    """RLIMIT_AS is private to the process: 85 % of what it leaves; shared limits keep 50 %,
    and the least of the shares wins, whichever limit is tighter in raw bytes."""
    from caffe_compat import headroom
    from caffe_compat.budget import ADDRESS_SPACE_FRACTION

    space = headroom.Limit(2 * 2**30, "RLIMIT_AS of 4 GiB", "address space")
    monkeypatch.setattr(headroom, "cgroup", lambda: None)
    monkeypatch.setattr(headroom, "address_space", lambda: space)
    monkeypatch.setattr(headroom, "physical", lambda: headroom.Limit(20 * 2**30, "MemAvailable"))
    made = resolve()
    assert ADDRESS_SPACE_FRACTION == 0.85
    assert made.limit == int(0.85 * 2 * 2**30) and "85%" in made.origin
    assert "RLIMIT_AS" in made.origin
    # MemAvailable of 3 GiB leaves less (1.5 GiB at 50 %) than RLIMIT_AS's 2 GiB at 85 %.
    monkeypatch.setattr(headroom, "physical", lambda: headroom.Limit(3 * 2**30, "MemAvailable"))
    made = resolve()
    assert made.limit == 3 * 2**29 and "MemAvailable" in made.origin and "50%" in made.origin


def test_address_space_limit_is_read(tmp_path):
    """In a child under RLIMIT_AS, the budget is at most 85 % of what the limit leaves."""
    import subprocess
    import sys

    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, resource.RLIM_INFINITY));"
        "from caffe_compat.budget import resolve; b = resolve(); print(b.limit, b.origin)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    limit, origin = out.stdout.split(" ", 1)
    assert int(limit) <= 0.85 * 3 * 2**30
    assert "RLIMIT_AS" in origin and "85%" in origin


def test_footprint_counts_values_parameters_and_scratch(tmp_path):
    loaded = load_net(write(tmp_path, SMALL))
    need = footprint(loaded.graph, loaded.inference.params)
    # conv 8x3x3x3 + 8, fc 10 x (8*7*7) + 10
    assert need.params == 4 * (8 * 27 + 8 + 10 * 392 + 10)
    values = 3 * 256 + 8 * 196 * 2 + 8 * 49 + 10 + 10  # per item: data, conv (x2 in place), ...
    assert need.per_item == 4 * values
    assert need.scratch_layer == "conv"
    assert need.scratch_per_item == 4 * 27 * 196  # im2col columns of one item


def test_live_peak_counts_values_until_their_last_reader(tmp_path):
    """Freed after their last reader, at most data + conv, or both versions of conv around the
    in-place ReLU, are alive at once (the outputs stay to the end)."""
    loaded = load_net(write(tmp_path, SMALL))
    need = footprint(loaded.graph, loaded.inference.params)
    assert need.live_per_item == 4 * (8 * 196 * 2)  # conv@conv and conv beside the ReLU
    assert (
        need.streaming().per_item == need.live_per_item and need.streaming().params == need.params
    )


def _chain(depth: int) -> str:
    layers = "".join(
        f'layer {{ name: "c{i}" type: "Convolution" bottom: "{"data" if i == 0 else f"c{i - 1}"}" '
        f'top: "c{i}" convolution_param {{ num_output: 8 kernel_size: 3 pad: 1 }} }}\n'
        for i in range(depth)
    )
    return 'input: "data" input_dim: 1 input_dim: 8 input_dim: 32 input_dim: 32\n' + layers


def test_calibration_fits_where_only_live_values_do(tmp_path):
    """An 8-layer chain: every value of a batch of 16 needs more than the budget, the live ones
    fewer. Calibration frees each value after its last reader, so it runs."""
    loaded = load_net(write(tmp_path, _chain(8)))
    need = footprint(loaded.graph, loaded.inference.params)
    assert need.per_item > 4 * need.live_per_item
    limit = 8 << 20
    assert 16 * (need.per_item + need.scratch_per_item) > limit
    weights = synthesize(loaded, max_memory=limit, progress=False)
    assert len(weights) == 8 and all(np.isfinite(w[0]).all() for w in weights.values())


def test_plan_batch_shrinks_then_refuses():
    need = budget.Footprint(
        params=0, largest_params=0, per_item=100.0, fixed=0, scratch_per_item=0.0, scratch_layer=""
    )
    assert plan_batch(Budget(10_000, "t"), need, 20, fixed=1000, copies=2, what="x") == 20
    assert plan_batch(Budget(2_000, "t"), need, 20, fixed=1000, copies=2, what="x") == 5
    with pytest.raises(MemoryBudgetError, match=r"x at batch 1 \(.*\) needs 1.17 KiB"):
        plan_batch(Budget(1_100, "t"), need, 20, fixed=1000, copies=2, what="x")
    with pytest.raises(MemoryBudgetError, match="at batch 20"):
        plan_batch(Budget(2_000, "t"), need, 20, fixed=1000, copies=2, what="x", shrink=False)


def test_synth_refuses_before_allocating(tmp_path, capsys):
    path = write(tmp_path, BIG_WEIGHTS)
    loaded = load_net(path)
    with pytest.raises(
        MemoryBudgetError,
        match=r"synthesizing weights needs 286 MiB, over the memory budget of 256 MiB",
    ):
        synthesize(loaded, method="he", max_memory="256M")
    assert all(not node.blobs for node in loaded.graph.nodes)
    out = tmp_path / "w.caffemodel"
    line = cli_error(capsys, "synth", path, "-o", out, "--max-memory", "256M")
    assert "calibrating synthesized weights" in line and "budget of 256 MiB (as set)" in line
    assert not out.exists()


def test_synth_cli_refuses_a_net_too_large_to_run(tmp_path, capsys):
    out = tmp_path / "w.caffemodel"
    line = cli_error(capsys, "synth", write(tmp_path, BIG_VALUES), "-o", out, "--max-memory", "64M")
    # 4000 x 4000 calibrates at 500 x 500 (the net alone decides: its size over 16 x 224 x 224
    # positions), which still does not fit 64 MiB
    assert "at 500 x 500" in line and 'layer "conv"' in line and "over the memory budget" in line
    assert not out.exists()


def test_synth_checks_before_writing(tmp_path, capsys, monkeypatch):
    """A failing check leaves no file behind (the weights are written after it)."""
    from caffe_compat.cli import synth as synth_cli

    def broken(*_args):
        raise CaffeCompatError("the check failed")

    monkeypatch.setattr(synth_cli, "_variety", broken)
    out = tmp_path / "w.caffemodel"
    assert "the check failed" in cli_error(capsys, "synth", write(tmp_path, SMALL), "-o", out)
    assert not out.exists()


def test_synth_variety_check_shrinks_to_the_budget(tmp_path, capsys):
    out = tmp_path / "w.caffemodel"
    assert (
        main(
            [
                "synth",
                str(write(tmp_path, SMALL)),
                "-o",
                str(out),
                "--max-memory",
                "330K",
                "--method",
                "he",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert out.exists()
    assert "unseen inputs" in printed and "over 16 unseen" not in printed


def test_huge_pooling_stride_is_refused_by_its_scratch(tmp_path, capsys):
    path = write(tmp_path, HUGE_STRIDE)
    loaded = load_net(path)  # a legal net
    assert loaded.graph.shapes["pool"] == (1, 3, 2, 2)
    with pytest.raises(MemoryBudgetError, match='layer "pool"'):
        synthesize(loaded, max_memory="2G")
    line = cli_error(capsys, "synth", path, "-o", tmp_path / "w.caffemodel", "--max-memory", "2G")
    assert "scratch" in line and 'layer "pool"' in line


def _weights(tmp_path, text):
    loaded = load_net(write(tmp_path, text))
    blobs = {
        n.name: [np.zeros(s, np.float32) for s in loaded.inference.params[n.name]]
        for n in loaded.graph.nodes
        if loaded.inference.params.get(n.name)
    }
    path = tmp_path / "w.caffemodel"
    write_caffemodel(path, loaded.net, blobs)
    return path


def test_convert_refuses_models_over_the_budget(tmp_path, capsys):
    from caffe_compat.tools.convert import convert

    weights = _weights(tmp_path, BIG_WEIGHTS)
    with pytest.raises(MemoryBudgetError, match="building the PyTorch and ONNX models"):
        convert(tmp_path / "net.prototxt", weights, out_prefix=tmp_path / "m", max_memory="256M")
    line = cli_error(
        capsys,
        "convert",
        tmp_path / "net.prototxt",
        weights,
        "-o",
        tmp_path / "m",
        "--max-memory",
        "256M",
    )
    assert "building the PyTorch and ONNX models" in line
    assert not list(tmp_path.glob("m.*"))


def test_verify_shrinks_its_batch_and_refuses_what_cannot_fit(tmp_path, capsys):
    from caffe_compat.verify import verify

    weights = _weights(tmp_path, SMALL)
    report = verify(
        tmp_path / "net.prototxt",
        weights,
        opencv=False,
        require_reference=False,
        devices=("cpu",),
        batch=20,
        max_memory="200K",
    )
    assert 1 <= report.batch < 20
    assert "not 20: the memory budget" in report.inputs
    line = cli_error(
        capsys, "verify", tmp_path / "net.prototxt", weights, "--max-memory", "20K", "--no-opencv"
    )
    assert "the verification (the float64 judge, values streamed) at batch 1 (" in line
    assert "over the memory budget of 20 KiB" in line
    with pytest.raises(MemoryBudgetError, match="at batch 20"):
        verify(
            tmp_path / "net.prototxt",
            weights,
            feeds={"data": np.zeros((20, 3, 16, 16), np.float32)},
            opencv=False,
            require_reference=False,
            max_memory="200K",
        )


def test_cli_refuses_a_bad_size(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:  # a usage error: argparse's exit, our wording
        main(
            [
                "synth",
                str(write(tmp_path, SMALL)),
                "-o",
                str(tmp_path / "w"),
                "--max-memory",
                "lots",
            ]
        )
    assert info.value.code == 2
    assert "argument --max-memory: expected a size such as 2G" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("layer", "parts"),
    [
        # Legal (odd, within int32): the channel-padded squares would hold 2^31 channels.
        (
            'layer { name: "norm" type: "LRN" bottom: "data" top: "norm" lrn_param { local_size: 2147483647 } }',
            ["scratch", 'layer "norm"'],
        ),
        # Legal (the top holds exactly Caffe's limit of 2^31 - 1 values): 8 GiB of values.
        (
            'layer { name: "tile" type: "Tile" bottom: "data" top: "tile" tile_param { axis: 0 tiles: 2147483647 } }',
            ["values", "per item"],
        ),
    ],
)
def test_legal_settings_that_ask_for_terabytes_are_refused(tmp_path, capsys, layer, parts):
    text = 'input: "data" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1\n' + layer
    path = write(tmp_path, text)
    load_net(path)
    line = cli_error(capsys, "synth", path, "-o", tmp_path / "w.caffemodel", "--max-memory", "2G")
    for part in ("over the memory budget of 2 GiB", *parts):
        assert part in line, line


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"
        ),
        RuntimeError("std::bad_alloc"),
        RuntimeError("can't start new thread"),
        RuntimeError("Resource temporarily unavailable"),  # std::system_error: no thread stack
        OSError(12, "Cannot allocate memory"),
    ],
)
def test_allocation_failures_become_one_line(exc):
    failure = budget.memory_failure(_raised(exc))
    assert isinstance(failure, MemoryBudgetError)
    assert str(failure).startswith("out of memory while this step (")
    assert "\n" not in str(failure) and "max_memory=" in str(failure)


def test_a_library_the_loader_cannot_map_is_one_line_naming_it():
    """Under RLIMIT_AS the first import of ONNX Runtime (or torch, OpenCV) inside a step can
    fail in the dynamic loader: an ImportError, not a MemoryError."""
    so = "/v/lib/onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so"
    failure = budget.memory_failure(
        _raised(ImportError(f"{so}: failed to map segment from shared object"))
    )
    assert isinstance(failure, MemoryBudgetError) and "\n" not in str(failure)
    assert "while loading the library onnxruntime_pybind11_state.cpython-311" in str(failure)
    assert "raise the limit" in str(failure) and failure.remedy is None
    assert budget.memory_failure(_raised(ImportError("No module named 'onnx'"))) is None


def test_numpy_and_protobuf_failures_are_recognised():
    from google.protobuf.message import EncodeError

    numpy_failure = _raised_in_compare()
    assert "comparing the results" in str(budget.memory_failure(numpy_failure))
    encode = budget.memory_failure(_raised(EncodeError("Failed to serialize proto")))
    assert "serializing the ONNX model" in str(encode)


def _raised_in_compare() -> BaseException:
    def compare():  # named as the verify step, so the failure is put there
        raise MemoryError("Unable to allocate 99.8 MiB for an array")

    try:
        compare()
    except MemoryError as exc:
        return exc
    raise AssertionError


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad"), BlockingIOError(11, "Resource temporarily unavailable"), KeyError("x")],
)
def test_other_errors_are_not_memory_failures(exc):
    assert budget.memory_failure(_raised(exc)) is None


def test_the_cli_reports_an_allocation_failure_as_one_line(tmp_path, capsys, monkeypatch):
    from caffe_compat.cli import inspect as inspect_command

    def float64_judge(args):
        raise MemoryError("Unable to allocate 1.2 GiB")

    monkeypatch.setattr(inspect_command, "run", float64_judge)
    assert main(["inspect", str(tmp_path / "x.prototxt")]) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith("caffe-compat: error: out of memory while running the float64 reference")
    assert "--max-memory SIZE" in line and "internal error" not in line


def test_a_batch_with_its_mirror_image_counts_two_rows_per_item(tmp_path):
    """AM-Softmax's test nets concatenate the batch with its mirror image along axis 0: those
    values hold two rows per item and grow with the batch (before, a first axis other than the
    declared batch counted whole, as a fixed value, 100 times too much at batch 100)."""
    path = tmp_path / "mirror.prototxt"
    path.write_text(
        'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 '
        "dim: 8 dim: 8 } } }\n"
        'layer { name: "f" type: "Flip" bottom: "data" top: "f" flip_param { flip_width: true } }\n'
        'layer { name: "cat" type: "Concat" bottom: "data" bottom: "f" top: "cat" '
        "concat_param { axis: 0 } }\n"
        'layer { name: "c" type: "Convolution" bottom: "cat" top: "c" convolution_param { '
        "num_output: 4 kernel_size: 3 pad: 1 } }\n"
    )
    loaded = load_net(path)
    need = footprint(loaded.graph, loaded.inference.params)
    image = 4 * 3 * 8 * 8  # float32 bytes of one item's input
    # data, f: one image each; cat: two; c: two rows of 4 x 8 x 8
    assert need.per_item == image * 4 + 2 * 4 * 4 * 8 * 8
    assert need.fixed == 0


def test_values_computed_per_roi_count_at_the_most_rois_the_layer_allows(tmp_path):
    """Proposal's shape rule reports one ROI (its placeholder): the budget counts the ROIs and
    every value computed per ROI at ``post_nms_topn``, the rest as they are."""
    from caffe_compat.budget import footprint, row_bounds, value_sizes

    path = tmp_path / "rcnn.prototxt"
    path.write_text(
        """
input: "data" input_shape { dim: 1 dim: 8 dim: 16 dim: 16 }
input: "scores" input_shape { dim: 1 dim: 18 dim: 4 dim: 4 }
input: "deltas" input_shape { dim: 1 dim: 36 dim: 4 dim: 4 }
input: "im_info" input_shape { dim: 1 dim: 3 }
layer { name: "proposal" type: "Proposal" bottom: "scores" bottom: "deltas" bottom: "im_info"
        top: "rois" proposal_param { feat_stride: 16 post_nms_topn: 30 } }
layer { name: "pool" type: "ROIPooling" bottom: "data" bottom: "rois" top: "pool"
        roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.25 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
"""
    )
    graph = load_net(path).graph
    assert row_bounds(graph) == {"rois": 30, "pool": 30, "fc": 30}
    sizes = value_sizes(graph, 1)
    assert sizes["pool"] == 4 * 30 * 8 * 2 * 2 and sizes["fc"] == 4 * 30 * 5
    assert sizes["data"] == 4 * 8 * 16 * 16
    need = footprint(graph, {})
    assert need.per_item == sum(sizes.values())
    # 9 anchors x 4 x 4 positions: at most 144 candidates, whatever the cut
    path.write_text(path.read_text().replace("post_nms_topn: 30", "post_nms_topn: 300"))
    assert row_bounds(load_net(path).graph)["fc"] == 144
