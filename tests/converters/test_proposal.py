"""Proposal (py-faster-rcnn's RPN proposal layer, OpenCV's built-in type): PyTorch, ONNX Runtime
and the float64 reference against a numpy port of py-faster-rcnn's ``proposal_layer.py`` written
here the way the original spells it (its ``generate_anchors``, ``bbox_transform_inv``,
``clip_boxes``, ``_filter_boxes`` and ``py_cpu_nms``), and against OpenCV 4's Proposal, which
computes the same boxes and pads them with zero rows to post_nms_topn."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat.ir.load import load_net
from caffe_compat.reference import forward
from caffe_compat.verify.inputs import feeds_for, structured_inputs
from caffe_compat.verify.opencv import opencv_caffe_available

F32 = np.float32


# --- py-faster-rcnn, as written there ----------------------------------------------------------


def _whctrs(anchor):
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws, hs, x_ctr, y_ctr):
    ws, hs = ws[:, np.newaxis], hs[:, np.newaxis]
    return np.hstack(
        (
            x_ctr - 0.5 * (ws - 1),
            y_ctr - 0.5 * (hs - 1),
            x_ctr + 0.5 * (ws - 1),
            y_ctr + 0.5 * (hs - 1),
        )
    )


def generate_anchors(base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    base_anchor = np.array([1, 1, base_size, base_size]) - 1
    w, h, x_ctr, y_ctr = _whctrs(base_anchor)
    size_ratios = w * h / np.array(ratios)
    ws = np.round(np.sqrt(size_ratios))
    hs = np.round(ws * np.array(ratios))
    ratio_anchors = _mkanchors(ws, hs, x_ctr, y_ctr)
    out = []
    for i in range(ratio_anchors.shape[0]):
        w, h, x_ctr, y_ctr = _whctrs(ratio_anchors[i, :])
        out.append(_mkanchors(w * np.array(scales), h * np.array(scales), x_ctr, y_ctr))
    return np.vstack(out)


def py_cpu_nms(dets, thresh):
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def proposal_layer(cls, bbox, im_info, feat_stride, pre, post, nms_thresh, min_size, scales,
                   ratios=(0.5, 1, 2), base_size=16, run_nms=True):  # fmt: skip
    """py-faster-rcnn's forward; SSH's TEST phase is the same without the NMS (``run_nms``)."""
    anchors = generate_anchors(base_size, ratios, np.array(scales))
    a = anchors.shape[0]
    scores = cls[:, a:, :, :]
    height, width = scores.shape[-2:]
    shift_x, shift_y = np.meshgrid(
        np.arange(0, width) * feat_stride, np.arange(0, height) * feat_stride
    )
    shifts = np.vstack((shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel())).T
    k = shifts.shape[0]
    all_anchors = (
        anchors.reshape((1, a, 4)) + shifts.reshape((1, k, 4)).transpose((1, 0, 2))
    ).reshape((k * a, 4))
    deltas = bbox.transpose((0, 2, 3, 1)).reshape((-1, 4))
    scores = scores.transpose((0, 2, 3, 1)).reshape((-1, 1))
    widths = all_anchors[:, 2] - all_anchors[:, 0] + 1.0
    heights = all_anchors[:, 3] - all_anchors[:, 1] + 1.0
    ctr_x, ctr_y = all_anchors[:, 0] + 0.5 * widths, all_anchors[:, 1] + 0.5 * heights
    pred_ctr_x = deltas[:, 0] * widths + ctr_x
    pred_ctr_y = deltas[:, 1] * heights + ctr_y
    pred_w, pred_h = np.exp(deltas[:, 2]) * widths, np.exp(deltas[:, 3]) * heights
    boxes = np.stack(
        [
            pred_ctr_x - 0.5 * pred_w,
            pred_ctr_y - 0.5 * pred_h,
            pred_ctr_x + 0.5 * pred_w,
            pred_ctr_y + 0.5 * pred_h,
        ],
        axis=1,
    )
    info = im_info[0]
    boxes[:, 0::2] = np.maximum(np.minimum(boxes[:, 0::2], info[1] - 1), 0)
    boxes[:, 1::2] = np.maximum(np.minimum(boxes[:, 1::2], info[0] - 1), 0)
    ws, hs = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    keep = np.where((ws >= min_size * info[2]) & (hs >= min_size * info[2]))[0]
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores.ravel(), kind="stable")[:pre]
    boxes, scores = boxes[order], scores[order]
    if not run_nms:
        return np.hstack((np.zeros((len(boxes), 1), F32), boxes.astype(F32))), scores
    keep = py_cpu_nms(np.hstack((boxes, scores)), nms_thresh)[:post]
    rois = np.hstack((np.zeros((len(keep), 1), F32), boxes[keep].astype(F32)))
    return rois, scores[keep]


# --- the layer ---------------------------------------------------------------------------------

H, W, A = 6, 8, 9


def head(layer: str) -> str:
    return (
        f'input: "cls"\ninput_shape {{ dim: 1 dim: {2 * A} dim: {H} dim: {W} }}\n'
        f'input: "bbox"\ninput_shape {{ dim: 1 dim: {4 * A} dim: {H} dim: {W} }}\n'
        'input: "im_info"\ninput_shape { dim: 1 dim: 3 }\n' + layer
    )


def proposal(pre=100, post=20, nms=0.7, min_size=8, scales=(8, 16, 32), tops=2) -> str:
    extra = " ".join(f"scale: {s}" for s in scales)
    names = 'top: "rois" top: "scores"' if tops == 2 else 'top: "rois"'
    return (
        'layer { name: "prop" type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "im_info" '
        f"{names} proposal_param {{ feat_stride: 16 pre_nms_topn: {pre} post_nms_topn: {post} "
        f"nms_thresh: {nms} min_size: {min_size} ratio: 0.5 ratio: 1 ratio: 2 {extra} }} }}"
    )


def rpn_feeds(seed: int = 0, size=(H * 16, W * 16)):
    rng = np.random.default_rng(seed)
    return {
        "cls": rng.uniform(0, 1, (1, 2 * A, H, W)).astype(F32),
        "bbox": rng.normal(0, 0.3, (1, 4 * A, H, W)).astype(F32),
        "im_info": np.array([[size[0], size[1], 1.0]], F32),
    }


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"pre": 40, "post": 300, "nms": 0.5, "min_size": 0},
        {"pre": 0, "post": 0, "nms": 0.3, "min_size": 16, "scales": (2, 3)},
    ],
)
def test_proposal(layer_check, settings):
    # anchors of 16 to 64 pixels: the boxes do not all clip to the whole 90 x 120 image
    args = {"pre": 100, "post": 20, "nms": 0.7, "min_size": 8, "scales": (1, 2, 4), **settings}
    anchors = 3 * len(args["scales"])
    prototxt = head(proposal(**args)).replace(f"dim: {2 * A} ", f"dim: {2 * anchors} ")
    prototxt = prototxt.replace(f"dim: {4 * A} ", f"dim: {4 * anchors} ")

    def feeds(n):
        rng = np.random.default_rng(3)
        return {
            "cls": rng.uniform(0, 1, (1, 2 * anchors, H, W)).astype(F32),
            "bbox": rng.normal(0, 0.3, (1, 4 * anchors, H, W)).astype(F32),
            "im_info": np.array([[90.0, 120.0, 1.0]], F32),
        }

    def expected(i, w):
        big = 10**9
        rois, scores = proposal_layer(
            i["cls"], i["bbox"], i["im_info"], 16, args["pre"] or big, args["post"] or big,
            args["nms"], args["min_size"], args["scales"],
        )  # fmt: skip
        return {"rois": rois, "scores": scores}

    layer_check(prototxt, expected, feeds=feeds, dynamic=False, opencv=False)
    rois = expected(feeds(1), None)["rois"]
    assert len(rois) >= 10 and (rois[:, 3] >= rois[:, 1]).all()


@pytest.mark.skipif(opencv_caffe_available() is not None, reason="OpenCV 4 is not installed")
def test_proposal_against_opencv(tmp_path):
    """OpenCV's Proposal: the same ROIs (float32 decoding), then zero rows to post_nms_topn."""
    import cv2

    path = tmp_path / "rpn.prototxt"
    path.write_text(head(proposal(post=300, min_size=0, tops=1)))
    feeds = rpn_feeds()
    ours = forward(load_net(path), feeds, outputs=["rois"])["rois"]
    net = cv2.dnn.readNetFromCaffe(str(path))
    for name, array in feeds.items():
        net.setInput(array, name)
    theirs = net.forward("prop").reshape(-1, 5)
    assert len(theirs) == 300 and 20 < len(ours) < 300
    np.testing.assert_allclose(theirs[: len(ours)], ours, atol=1e-4)
    assert not theirs[len(ours) :].any()


def test_python_proposal_layer_is_the_built_in(tmp_path):
    """py-faster-rcnn's test nets name the layer by its Python class: the same function, in
    every back end, ONNX included (param_str gives feat_stride and the scales)."""
    from caffe_compat.converters.onnx.export import to_onnx
    from caffe_compat.verify.backends import run_onnxruntime, run_torch

    python = (
        'layer { name: "prop" type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" '
        'top: "rois" python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" '
        "param_str: \"'feat_stride': 16\" } }"
    )
    path = tmp_path / "rpn.prototxt"
    path.write_text(head(python))
    loaded = load_net(path)
    feeds = rpn_feeds(5)
    # py-faster-rcnn's TEST settings: 6000 before NMS, 300 after, 0.7, min_size 16
    want, _ = proposal_layer(
        feeds["cls"], feeds["bbox"], feeds["im_info"], 16, 6000, 300, 0.7, 16, (8, 16, 32)
    )
    ref = forward(loaded, feeds, outputs=["rois"])["rois"]
    torch_out = run_torch(loaded.graph, feeds, ["rois"])["rois"]
    onnx_out = run_onnxruntime(to_onnx(loaded.graph).SerializeToString(), feeds)["rois"]
    for got in (ref, torch_out, onnx_out):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert structured_inputs(loaded.graph).keys() == {"im_info"}
    info = feeds_for(loaded.graph.inputs, 1, makers=structured_inputs(loaded.graph))["im_info"]
    np.testing.assert_array_equal(info, [[H, W, 1]])  # the largest 4-D input's size


def test_pvanet_ratios_in_param_str_set_the_anchors():
    """PVANet's proposal layer reads 'ratios' from param_str beside 'scales' (42 anchors: 7 x 6);
    py-faster-rcnn's has only scales (ratios 0.5, 1, 2). Both become the built-in's fields."""
    from google.protobuf import text_format

    from caffe_compat.ir.graph import Node
    from caffe_compat.proto import caffe_pb2
    from caffe_compat.shapes.python_layer import replacement

    def proposal(param_str: str) -> caffe_pb2.ProposalParameter:
        param = text_format.Parse(
            'name: "proposal" type: "Python" python_param { module: "rpn.proposal_layer" '
            f'layer: "ProposalLayer" param_str: "{param_str}" }}',
            caffe_pb2.LayerParameter(),
        )
        node = replacement(Node("proposal", "Python", param, ["a", "b", "c"], ["rois"]))
        assert node is not None and node.type == "Proposal"
        return node.param.proposal_param

    # FPN's class of the same name reads a pair of bottoms per level: not this layer
    fpn = text_format.Parse(
        'name: "proposal" type: "Python" python_param { module: "rpn.proposal_layer" '
        'layer: "ProposalLayer" param_str: "\'feat_stride\': 4,8,16,32,64" }',
        caffe_pb2.LayerParameter(),
    )
    levels = [f"b{i}" for i in range(11)]
    assert replacement(Node("proposal", "Python", fpn, levels, ["rois"])) is None
    pva = proposal("{'feat_stride': 16, 'ratios': [0.333, 0.5, 0.667, 1, 1.5, 2, 3], "
                   "'scales': [2, 3, 5, 9, 16, 32]}")  # fmt: skip
    assert list(pva.ratio) == pytest.approx([0.333, 0.5, 0.667, 1, 1.5, 2, 3])
    assert list(pva.scale) == [2, 3, 5, 9, 16, 32] and pva.feat_stride == 16
    plain = proposal("'feat_stride': 16")
    assert list(plain.ratio) == [] and list(plain.scale) == []  # the layer's defaults apply


def test_ssh_proposal_layer_is_the_built_in_without_nms(tmp_path):
    """SSH's proposal layer (mahyarnajibi/SSH, TEST phase): py-faster-rcnn's boxes with its
    base_size/ratios/scales, the best 1000, minimum size 0 and no NMS, in every back end. Its
    TRAIN phase differs (NMS, a placeholder row) and stays a Python layer."""
    from caffe_compat.converters.onnx.export import to_onnx
    from caffe_compat.ir.graph import Node
    from caffe_compat.proto import caffe_pb2
    from caffe_compat.shapes.python_layer import replacement
    from caffe_compat.verify.backends import run_onnxruntime, run_torch

    a = 2  # ratio 1, scales 4 and 8
    python = (
        'layer { name: "prop" type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" '
        'top: "rois" top: "scores" python_param { module: "SSH.layers.proposal_layer" '
        "layer: \"ProposalLayer\" param_str: \"{'feat_stride': 16,'scales': [4,8], "
        "'ratios':[1,]}\" } }"
    )
    text = head(python).replace(f"dim: {2 * A} ", f"dim: {2 * a} ")
    path = tmp_path / "ssh.prototxt"
    path.write_text(text.replace(f"dim: {4 * A} ", f"dim: {4 * a} "))
    loaded = load_net(path)
    rng = np.random.default_rng(2)
    feeds = {
        "cls": rng.uniform(0, 1, (1, 2 * a, H, W)).astype(F32),
        "bbox": rng.normal(0, 0.3, (1, 4 * a, H, W)).astype(F32),
        "im_info": np.array([[90.0, 120.0, 1.0]], F32),
    }
    rois, scores = proposal_layer(
        feeds["cls"], feeds["bbox"], feeds["im_info"], 16, 1000, 0, 0.0, 0, (4, 8),
        ratios=(1,), run_nms=False,
    )  # fmt: skip
    assert len(rois) == H * W * a  # every box kept, overlapping ones included
    ref = forward(loaded, feeds, outputs=["rois", "scores"])
    torch_out = run_torch(loaded.graph, feeds, ["rois", "scores"])
    onnx_out = run_onnxruntime(to_onnx(loaded.graph).SerializeToString(), feeds)
    for got in (ref, torch_out, onnx_out):
        np.testing.assert_allclose(got["rois"], rois, atol=1e-4)
        np.testing.assert_allclose(got["scores"], scores, atol=1e-6)
    train = load_net(path).graph.node("prop").param
    train.phase = caffe_pb2.TRAIN
    assert replacement(Node("prop", "Python", train, ["a", "b", "c"], ["rois"])) is None


@pytest.mark.parametrize("extra", ["", 'layer { name: "pool" type: "ROIPooling" bottom: "feat" '
                                   'bottom: "rois" top: "pool" roi_pooling_param { pooled_h: 2 '
                                   "pooled_w: 2 spatial_scale: 0.0625 } }"])  # fmt: skip
def test_convert_checks_a_net_whose_rois_are_an_output_or_read(tmp_path, extra):
    """convert's check asks the exported model for the ROIs too (to take them as given at
    near-ties): an RPN whose ROIs are already a net output, and a net reading them, both pass."""
    from caffe_compat.io.writer import definitions_only, write_caffemodel
    from caffe_compat.tools.convert import convert

    feat = f'input: "feat"\ninput_shape {{ dim: 1 dim: 2 dim: {H} dim: {W} }}\n' if extra else ""
    path = tmp_path / "rpn.prototxt"
    path.write_text(feat + head(proposal(post=20, tops=1)) + "\n" + extra)
    weights = tmp_path / "rpn.caffemodel"
    write_caffemodel(weights, definitions_only(load_net(path).net.layer), {})
    result = convert(path, weights, out_prefix=tmp_path / "out", targets=["onnx"], progress=False)
    assert result.report is not None and result.report.passed, result.report
