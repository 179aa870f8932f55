"""One row of verify's table: the largest absolute difference taken in float64, against the
tolerance; scalars, shape mismatches and non-finite values; one float64 scratch array at most."""

from __future__ import annotations

import tracemalloc

import numpy as np

from caffe_compat.verify.compare import Tolerance, compare


def row(ours, reference, tolerance=None):
    return compare("v", "b", ours, reference, "torch-cpu", "float64", tolerance or Tolerance())


def test_differences_are_taken_in_float64():
    ours = np.array([1.0, 2.0, 3.0], np.float32)
    reference = np.array([1.0, 2.0 + 1e-9, 3.0 - 2.5e-6], np.float64)
    found = row(ours, reference)
    assert abs(found.max_abs - 2.5e-6) < 1e-12 and found.max_ref == 3.0 - 2.5e-6
    assert found.passed


def test_scalars_compare():
    found = row(np.asarray(np.float32(1.5)), np.asarray(2.0))
    assert found.max_abs == 0.5 and found.max_ref == 2.0 and not found.passed


def test_shapes_non_finite_values_and_negative_extremes():
    assert row(np.zeros((2, 3)), np.zeros(6)).passed  # same count: reshaped
    mismatch = row(np.zeros((2, 3)), np.zeros(5))
    assert not mismatch.passed and mismatch.note == "shape [2, 3] vs reference [5]"
    assert row(np.array([np.inf, 0.0]), np.array([0.0, 0.0])).max_abs == float("inf")
    assert row(np.array([-4.0, 1.0]), np.array([-4.0, 1.0])).max_ref == 4.0


def test_one_scratch_array_at_most():
    ours = np.ones(1 << 22, np.float32)  # 16 MiB
    reference = np.ones(1 << 22, np.float64)
    tracemalloc.start()
    try:
        row(ours, reference)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 1.25 * (8 << 22)  # one float64 array the size of the blob, not four


# --- float32 error growth: Tolerance.growth_limit over accumulation_lengths and error_scales ---

GROWTH_NET = """name: "growth"
input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "side" type: "Convolution" bottom: "data" top: "side"
        convolution_param { num_output: 2 kernel_size: 1 group: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def _growth_net(tmp_path):
    from caffe_compat.ir.load import load_net

    path = tmp_path / "growth.prototxt"
    path.write_text(GROWTH_NET)
    return load_net(path)


def test_accumulation_lengths_sum_products_along_the_longest_chain(tmp_path):
    from caffe_compat.verify.compare import accumulation_lengths

    loaded = _growth_net(tmp_path)
    lengths = accumulation_lengths(loaded.graph, loaded.inference.params)
    assert lengths["data"] == (0, 0) and lengths["side"] == (3, 1)  # 3 channels x 1 x 1
    assert lengths["conv@conv"] == (27, 1) and lengths["conv"] == (27, 1)  # ReLU adds none
    assert lengths["ip"] == (27 + 4 * 6 * 6, 2) and lengths["prob"] == lengths["ip"]


def test_a_softmax_inherits_its_logits_error_scale(tmp_path):
    from caffe_compat.verify.compare import error_scales

    loaded = _growth_net(tmp_path)
    values = {
        "data": np.full(3, 2.0),
        "conv@conv": np.array([-7.0, 3.0]),
        "conv": np.array([0.0, 3.0]),
        "ip": np.array([-8.5, 1.0]),
        "prob": np.array([0.01, 0.99]),
    }
    scales = error_scales(loaded.graph, loaded.inference.params, values)
    assert scales["conv@conv"] == 7.0  # accumulating: its own max
    assert scales["conv"] == 7.0  # ReLU: its bottom's error, whose scale is 7
    assert scales["ip"] == 8.5 and scales["prob"] == 8.5


def test_proposal_boxes_carry_their_deltas_error_times_the_box_size(tmp_path):
    """bbox_transform_inv moves a corner by anchor_w x err(dx) + w / 2 x err(dw): the ROIs'
    error scale is the deltas' times (largest anchor + half the largest box), here one 128 x 128
    anchor (base 16, ratio 1, scale 8) and boxes up to 61 wide: 0.5 x (128 + 30.5)."""
    from caffe_compat.ir.load import load_net_text
    from caffe_compat.verify.compare import error_scales

    loaded = load_net_text(
        'layer { name: "in" type: "Input" top: "prob" top: "deltas" top: "info" input_param { '
        "shape { dim: 1 dim: 2 dim: 4 dim: 4 } shape { dim: 1 dim: 4 dim: 4 dim: 4 } "
        "shape { dim: 1 dim: 3 } } }\n"
        'layer { name: "p" type: "Proposal" bottom: "prob" bottom: "deltas" bottom: "info" '
        'top: "rois" proposal_param { feat_stride: 16 base_size: 16 ratio: 1 scale: 8 } }\n',
        path=str(tmp_path / "p.prototxt"),
    )
    values = {
        "prob": np.array([0.2, 0.9]),
        "deltas": np.array([-0.5, 0.1]),
        "info": np.array([64.0, 64.0, 1.0]),
        "rois": np.array([[0, 0, 0, 60, 40], [0, 10, 5, 30, 25.0]]),
    }
    scales = error_scales(loaded.graph, loaded.inference.params, values)
    assert scales["rois"] == 0.5 * (128 + 0.5 * 61)
    values["deltas"] = np.array([-0.01, 0.01])  # then im_info's own magnitude (64) is larger
    assert error_scales(loaded.graph, loaded.inference.params, values)["rois"] == 64.0


def test_growth_limit_is_the_stated_formula():
    tolerance = Tolerance()
    expected = 4.0 * 2.0**-24 * np.sqrt(12464.0 * 36) * 8.5
    assert np.isclose(tolerance.growth_limit(12464, 36, 8.5, float32_judge=False), expected)
    assert np.isclose(tolerance.growth_limit(12464, 36, 8.5, float32_judge=True), 2 * expected)
    assert Tolerance(growth=0.0).growth_limit(12464, 36, 8.5, float32_judge=True) == 0.0
    # MobileNet-SSD's measured 1.0e-4 of max (ONNX Runtime vs float64) is inside, with margin
    assert 1.5e-4 < tolerance.growth_limit(12464, 36, 1.0, float32_judge=False) < 2e-4
    # the shallow Levi-Hassner age net: under the plain rtol, so nothing loosens there
    assert tolerance.growth_limit(24691, 6, 1.0, float32_judge=False) < 1e-4


def test_an_allowance_above_the_plain_limit_is_used_and_said():
    reference = np.array([0.5, 0.99])
    ours = reference + np.array([0.0, 1.4e-4])
    assert not row(ours, reference).passed
    grown = compare("p", "p", ours, reference, "torch-cpu", "float64", Tolerance(), 1.6e-4)
    assert grown.passed and grown.limit == 1.6e-4 and "growth" in grown.note
    beyond = compare("p", "p", ours, reference, "torch-cpu", "float64", Tolerance(), 1.2e-4)
    assert not beyond.passed
    small = compare("p", "p", ours, reference, "torch-cpu", "float64", Tolerance(), 1e-9)
    assert small.limit == 1e-4 and small.note == ""


def test_the_model_covers_a_deep_float32_chain_without_being_vacuous():
    """24 He-scaled ReLU layers of 256-term dot products in float32 against float64: the
    measured error (about 1e-6 of max) stays under the growth limit, which stays at the 1e-4
    scale of max (a looser model would pass semantic differences)."""
    rng = np.random.default_rng(0)
    x32 = rng.standard_normal((16, 256)).astype(np.float32)
    x64 = x32.astype(np.float64)  # both sides read the same float32 inputs and weights
    for _ in range(24):
        w = (rng.standard_normal((256, 256)) * np.sqrt(2 / 256)).astype(np.float32)
        x64 = np.maximum(x64 @ w.astype(np.float64), 0)
        x32 = np.maximum(x32 @ w, 0)
    error = float(np.abs(x32 - x64).max())
    largest = float(np.abs(x64).max())
    limit = Tolerance().growth_limit(24 * 256, 24, largest, float32_judge=False)
    assert error <= limit <= 2e-4 * largest, (error, limit)
