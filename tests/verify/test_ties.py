"""Argmax masks at near-ties: a float32 back end may pick the other of two maxima its own
arithmetic made equal; verify reruns the judge with that choice, and only at near-ties."""

from __future__ import annotations

import numpy as np

from caffe_compat.ir.load import load_net
from caffe_compat.verify import verify_loaded
from caffe_compat.verify.ties import near_tie_masks

# x + 2^-24 in float32 rounds 1 + 2^-23 and 1 + 2^-22 both to 1 + 2^-22 (ties to even), so
# Caffe's float32 first maximum is index 0 of the window; in float64 index 1 is larger. The
# unpooling then puts the maximum at another place: a whole value apart, not a rounding.
NET = """
input: "data" input_shape { dim: 1 dim: 1 dim: 2 dim: 4 }
layer { name: "shift" type: "Power" bottom: "data" top: "y" power_param { shift: 5.9604645e-08 } }
layer { name: "pool" type: "Pooling" bottom: "y" top: "pool" top: "mask"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up"
        upsample_param { upsample_h: 2 upsample_w: 4 } }
"""


def _feeds() -> dict[str, np.ndarray]:
    one = np.float32(1)
    first, second = one + np.float32(2.0**-23), one + np.float32(2.0**-22)
    window = [[first, second, 0.25, 0.5], [0.0, 0.0, 0.0, 0.125]]
    return {"data": np.array(window, dtype=np.float32)[None, None]}


def test_a_near_tie_decided_otherwise_reruns_the_judge_and_says_so(tmp_path):
    path = tmp_path / "tie.prototxt"
    path.write_text(NET)
    loaded = load_net(path)
    report = verify_loaded(
        loaded, feeds=_feeds(), against=("float64",), devices=("cpu",), progress=False
    )
    assert report.passed, report.render(all_rows=False)
    notes = [n for n in report.notes if "near-ties" in n]
    assert {n.split(":")[0] for n in notes} == {"torch-cpu", "onnxruntime-cpu"}
    assert 'layer "pool": 1 of 2 argmax choices differ' in notes[0]


def test_only_near_ties_are_accepted(tmp_path):
    path = tmp_path / "tie.prototxt"
    path.write_text(NET)
    graph = load_net(path).graph
    x = np.array([[1.0, 1.5, 0.25, 0.5], [0.0, 0.0, 0.0, 0.125]])[None, None]
    judge = {"y": x, "mask": np.array([[[[1.0, 3.0]]]])}
    picked_first = {"mask": np.array([[[[0.0, 3.0]]]])}  # 1.0 vs 1.5: not a tie

    def limit(value: str) -> float:
        return 1e-4

    assert near_tie_masks(graph, judge, picked_first, limit) == ({}, [])
    close = {"y": x + np.array([[0, -0.5 + 1e-5, 0, 0], [0, 0, 0, 0]])[None, None]}
    fixed, notes = near_tie_masks(graph, {**judge, **close}, picked_first, limit)
    assert list(fixed) == ["mask"] and np.array_equal(fixed["mask"], picked_first["mask"])
    assert len(notes) == 1
    padded = {"mask": np.array([[[[-1.0, 3.0]]]])}  # a padding-only window: never a tie
    assert near_tie_masks(graph, {**judge, **close}, padded, limit) == ({}, [])


def test_a_near_tie_is_kept_for_the_values_a_later_group_holds(tmp_path, monkeypatch):
    """Streamed, one value per back-end run: the mask's run finds the near-tie, and the run
    holding the unpooled value after it still compares with the rerun judge."""
    from caffe_compat.verify import run

    monkeypatch.setattr(run, "_group_room", lambda *args: 1.0)
    path = tmp_path / "tie.prototxt"
    path.write_text(NET)
    loaded = load_net(path)
    report = verify_loaded(
        loaded,
        feeds=_feeds(),
        against=("float64",),
        devices=("cpu",),
        progress=False,
        streamed=True,
    )
    assert report.passed, report.render(all_rows=False)
    assert any("returned its values in 4 group(s)" in n for n in report.notes)
    assert {c.value for c in report.comparisons} == {"y", "pool", "mask", "up"}
    assert [n.split(":")[0] for n in report.notes if "near-ties" in n] == [
        "torch-cpu",
        "onnxruntime-cpu",
    ]


# The same float32 rounding between two classes: both become 1 + 2^-22 in float32, where Caffe's
# ArgMax (a sort on (value, index) pairs, greater first) keeps the later class; in float64
# class 0 is larger.
CLASSES = """
input: "data" input_shape { dim: 1 dim: 2 dim: 1 dim: 2 }
layer { name: "shift" type: "Power" bottom: "data" top: "y" power_param { shift: 5.9604645e-08 } }
layer { name: "argmax" type: "ArgMax" bottom: "y" top: "argmax" argmax_param { axis: 1 } }
"""


def test_a_class_chosen_otherwise_at_a_near_tie_is_accepted_without_a_rerun(tmp_path):
    path = tmp_path / "classes.prototxt"
    path.write_text(CLASSES)
    loaded = load_net(path)
    one = np.float32(1)
    scores = [[[one + np.float32(2.0**-22), 0.25]], [[one + np.float32(2.0**-23), 0.5]]]
    feeds = {"data": np.array(scores, dtype=np.float32)[None]}
    report = verify_loaded(
        loaded, feeds=feeds, against=("float64",), devices=("cpu",), progress=False
    )
    assert report.passed, report.render(all_rows=False)
    notes = [n for n in report.notes if "class choices" in n]
    assert {n.split(":")[0] for n in notes} == {"torch-cpu", "onnxruntime-cpu"}
    assert 'layer "argmax": 1 of 2 class choices differ' in notes[0]


def test_only_near_tie_classes_are_accepted(tmp_path):
    from caffe_compat.verify.ties import near_tie_classes

    path = tmp_path / "classes.prototxt"
    path.write_text(CLASSES)
    graph = load_net(path).graph
    y = np.array([[[1.0, 0.25]], [[1.5, 0.5]]])[None]  # class 1 wins the first column by 0.5
    judge = {"y": y, "argmax": np.array([[[[1.0, 1.0]]]])}
    other = {"argmax": np.array([[[[0.0, 1.0]]]])}
    assert near_tie_classes(graph, judge, other, lambda v: 1e-4) == ({}, [])
    close = {"y": np.array([[[1.0, 0.25]], [[1.0 + 1e-5, 0.5]]])[None]}
    fixed, notes = near_tie_classes(graph, {**judge, **close}, other, lambda v: 1e-4)
    assert list(fixed) == ["argmax"] and len(notes) == 1
    outside = {"argmax": np.array([[[[2.0, 1.0]]]])}  # no class 2: never a tie
    assert near_tie_classes(graph, {**judge, **close}, outside, lambda v: 1e-4) == ({}, [])


# A class choice downstream of a mask taken as given. The rerun starts from the judge's pooled
# value as kept (float32: 1 + 2^-22) and adds 2^-24 in float64; the other channel holds
# 1 + 2^-22. Against the first judge (mask on index 1) the class at index 1 differs by a whole
# value; against the rerun (mask on index 0) the class at index 0 is a near-tie of its own:
# float32 rounds 1 + 2^-22 + 2^-24 to 1 + 2^-22 (ties to even), both channels tie and Caffe's
# ArgMax keeps the later class, float64 has the unpooled channel larger.
AFTER_MASK = (
    NET
    + """
input: "other" input_shape { dim: 1 dim: 1 dim: 2 dim: 4 }
layer { name: "nudge" type: "Power" bottom: "up" top: "up2" power_param { shift: 5.9604645e-08 } }
layer { name: "both" type: "Concat" bottom: "up2" bottom: "other" top: "both" }
layer { name: "class" type: "ArgMax" bottom: "both" top: "class" argmax_param { axis: 1 } }
"""
)


def test_a_class_after_a_mask_taken_is_judged_against_the_rerun(tmp_path):
    path = tmp_path / "after_mask.prototxt"
    path.write_text(AFTER_MASK)
    loaded = load_net(path)
    other = np.full((1, 1, 2, 4), 0.5, dtype=np.float32)
    other[0, 0, 0, 0] = np.float32(1) + np.float32(2.0**-22)
    report = verify_loaded(
        loaded,
        feeds={**_feeds(), "other": other},
        against=("float64",),
        devices=("cpu",),
        progress=False,
    )
    assert report.passed, report.render(all_rows=False)
    torch_notes = [n for n in report.notes if n.startswith("torch-cpu") and "near-ties" in n]
    assert any('layer "pool": 1 of 2 argmax choices' in n for n in torch_notes)
    assert any('layer "class": 1 of 8 class choices' in n for n in torch_notes)


# Proposals cut by their scores: two candidates whose scores float32 rounds level can swap at
# the top-N cut, and a correct back end then keeps another box than the float64 judge.
PROPOSALS = """
input: "data" input_shape { dim: 1 dim: 2 dim: 8 dim: 8 }
input: "scores" input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }
input: "deltas" input_shape { dim: 1 dim: 4 dim: 4 dim: 4 }
input: "im_info" input_shape { dim: 1 dim: 3 }
layer { name: "proposal" type: "Proposal" bottom: "scores" bottom: "deltas" bottom: "im_info"
        top: "rois" proposal_param { feat_stride: 16 ratio: 1 scale: 1 pre_nms_topn: 16
        post_nms_topn: 3 nms_thresh: 0.99 } }
layer { name: "pool" type: "ROIPooling" bottom: "data" bottom: "rois" top: "pool"
        roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.125 } }
"""


def test_proposals_cut_otherwise_are_taken_where_the_layer_agrees(tmp_path):
    from caffe_compat.reference.run import forward, layer_forward
    from caffe_compat.verify.ties import recomputed_rows

    path = tmp_path / "proposals.prototxt"
    path.write_text(PROPOSALS)
    loaded = load_net(path)
    graph = loaded.graph
    (node,) = [n for n in graph.nodes if n.type == "Proposal"]
    rng = np.random.default_rng(0)
    object_scores = np.linspace(0.9, 0.1, 16).reshape(4, 4)
    feeds = {
        "data": rng.standard_normal((1, 2, 8, 8)).astype(np.float32),
        "scores": np.stack([1 - object_scores, object_scores])[None].astype(np.float32),
        "deltas": np.zeros((1, 4, 4, 4), np.float32),
        "im_info": np.array([[64, 64, 1]], np.float32),
    }
    judge = forward(loaded, feeds)

    def limit(value: str) -> float:
        return 1e-4

    # the third and fourth candidates level: this back end's rounding ranks the fourth first
    scores = feeds["scores"].copy()
    scores[0, 1, 0, 3] = scores[0, 1, 0, 2] + np.float32(1e-7)
    rows = layer_forward(node, [scores.astype(np.float64), feeds["deltas"], feeds["im_info"]])[0]
    assert not np.array_equal(rows, judge["rois"])  # another box made the cut
    fixed, notes = recomputed_rows(
        graph, judge, {"scores": scores, "rois": rows}, limit, layer_forward
    )
    assert list(fixed) == ["rois"] and np.array_equal(fixed["rois"], rows)
    assert 'layer "proposal": its 3 rows differ' in notes[0]
    # no back end returns the net's inputs: they come from the feeds
    given = {**feeds, "scores": scores}
    found, _ = recomputed_rows(graph, {}, {"rois": rows}, limit, layer_forward, given)
    assert (
        found == {}
        and recomputed_rows(graph, judge, {"rois": rows}, limit, layer_forward, given)[0]
    )

    near = {"rois": (judge["rois"] * (1 + 1e-7)).astype(np.float32)}  # a rounding apart
    fixed, notes = recomputed_rows(graph, judge, near, limit, layer_forward)
    assert list(fixed) == ["rois"] and "within the limit" in notes[0]

    wrong = judge["rois"].copy()
    wrong[1, 1:] += 8  # a box the layer does not make from these scores
    assert recomputed_rows(graph, judge, {"rois": wrong}, limit, layer_forward) == ({}, [])
    assert recomputed_rows(graph, judge, {"rois": judge["rois"]}, limit, layer_forward) == ({}, [])
