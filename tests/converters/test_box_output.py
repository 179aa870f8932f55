"""BoxOutput (MS-CNN): PyTorch, ONNX Runtime and the float64 reference against the fork's
Forward_cpu written out here as its loops (per image, scale and position; the (score, index)
sort; nmsMax's pairwise loop with BoxIOU). OpenCV 4 has no such layer. ONNX refuses the IOMU and
IOFU overlap modes in one line; PyTorch and the reference run them."""

from __future__ import annotations

import math

import numpy as np
import pytest

F32 = np.float32
FLT_MAX = float(np.finfo(np.float32).max)


def box_iou(a, b, mode):
    x1, y1, w1, h1 = a
    x2, y2, w2, h2 = b
    if w1 <= 0 or h1 <= 0 or w2 <= 0 or h2 <= 0:
        return 0.0
    tlx, tly = max(x1, x2), max(y1, y2)
    brx, bry = min(x1 + w1, x2 + w2), min(y1 + h1, y2 + h2)
    over = 0.0 if tlx >= brx or tly >= bry else (brx - tlx) * (bry - tly)
    if mode == "IOMU":
        u = min(w1 * h1, w2 * h2)
    elif mode == "IOFU":
        u = w1 * h1
    else:
        u = w1 * h1 + w2 * h2 - over
    return over / u


def box_output_loops(maps, fg_thr, iou_thr, mode, fields, rates, min_size, max_nms, max_post, std):
    whr = xyr = 2.0
    out = []
    for i in range(maps[0].shape[0]):
        boxes = []
        for j, x in enumerate(maps):
            c, height, width = x.shape[1:]
            k = c - 4
            for pos in range(height * width):
                h, w = divmod(pos, width)
                v = x[i, :, h, w]
                fg = max([-FLT_MAX, *v[1:k]]) - v[0]
                if fg < fg_thr:
                    continue
                bx, by, bw, bh = (v[k + a] * std[a] for a in range(4))
                bx = min(max(bx, -1 / xyr), 1 / xyr) * fields[j] + (w + 0.5) * rates[j]
                by = min(max(by, -1 / xyr), 1 / xyr) * fields[j] + (h + 0.5) * rates[j]
                bw = fields[j] * math.exp(min(max(bw, math.log(1 / whr)), math.log(whr)))
                bh = fields[j] * math.exp(min(max(bh, math.log(1 / whr)), math.log(whr)))
                bx, by = max(bx - bw / 2, 0), max(by - bh / 2, 0)
                bw, bh = min(bw, width * rates[j] - bx), min(bh, height * rates[j] - by)
                if bw >= min_size and bh >= min_size:
                    boxes.append((fg, len(boxes), (bx, by, bw, bh)))
        boxes.sort(key=lambda b: (b[0], b[1]), reverse=True)  # std::greater on (score, index)
        if max_nms > 0:
            boxes = boxes[:max_nms]
        kept = [True] * len(boxes)
        for a in range(len(boxes)):
            if not kept[a]:
                continue
            for b in range(a + 1, len(boxes)):
                if kept[b] and box_iou(boxes[a][2], boxes[b][2], mode) > iou_thr:
                    kept[b] = False
        boxes = [b for b, k in zip(boxes, kept) if k]
        if max_post > 0:
            boxes = boxes[:max_post]
        out += [[i, x, y, x + w, y + h, s] for s, _, (x, y, w, h) in boxes]
    if not out:
        return np.array([[0, 1, 1, 10, 10]], F32).reshape(1, 5, 1, 1), np.zeros((1, 6, 1, 1), F32)
    rows = np.array(out, F32)
    return rows[:, :5].reshape(-1, 5, 1, 1), rows.reshape(-1, 6, 1, 1)


STD = (0.1, 0.1, 0.2, 0.2)


def box_net(fg_thr=0.2, iou_thr=0.5, mode="IOU", extra="") -> str:
    return (
        'layer { name: "maps" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 '
        "dim: 6 dim: 6 dim: 8 } shape { dim: 2 dim: 6 dim: 3 dim: 4 } } }\n"
        'layer { name: "box" type: "BoxOutput" bottom: "a" bottom: "b" top: "rois" top: "scored" '
        f'box_output_param {{ fg_thr: {fg_thr} iou_thr: {iou_thr} nms_type: "{mode}" '
        "field_h: 16 field_h: 32 field_w: 16 field_w: 32 downsample_rate: 8 downsample_rate: 16 "
        f"min_size: 4 {extra} }} bbox_reg_param {{ bbox_mean: 0 bbox_mean: 0 bbox_mean: 0 "
        "bbox_mean: 0 bbox_std: 0.1 bbox_std: 0.1 bbox_std: 0.2 bbox_std: 0.2 } }"
    )


def feeds(n):
    rng = np.random.default_rng(2)
    return {
        "a": rng.normal(0, 1, (2, 6, 6, 8)).astype(F32),
        "b": rng.normal(0, 1, (2, 6, 3, 4)).astype(F32),
    }


def expected_for(fg_thr, iou_thr, mode, max_nms=0, max_post=0):
    def expected(i, w):
        maps = [i["a"].astype(np.float64), i["b"].astype(np.float64)]
        rois, scored = box_output_loops(
            maps, fg_thr, iou_thr, mode, (16, 32), (8, 16), 4, max_nms, max_post, STD
        )
        return {"rois": rois, "scored": scored}

    return expected


@pytest.mark.parametrize(
    "fg_thr, iou_thr, extra, cuts",
    [
        (0.2, 0.5, "", (0, 0)),
        (0.0, 0.3, "max_nms_num: 10 max_post_nms_num: 4", (10, 4)),
        (50.0, 0.5, "", (0, 0)),  # nothing: the fork's dummy ROI
    ],
)
def test_box_output(layer_check, fg_thr, iou_thr, extra, cuts):
    layer_check(
        box_net(fg_thr, iou_thr, "IOU", extra),
        expected_for(fg_thr, iou_thr, "IOU", *cuts),
        feeds=feeds,
        opencv=False,
        dynamic=False,
    )


@pytest.mark.parametrize("mode", ["IOMU", "IOFU"])
def test_other_overlap_modes_in_torch_and_the_reference(tmp_path, mode):
    from caffe_compat.converters.onnx.export import to_onnx
    from caffe_compat.errors import UnsupportedLayersError
    from caffe_compat.ir.load import load_net
    from caffe_compat.reference import forward
    from caffe_compat.verify.backends import run_torch

    path = tmp_path / "net.prototxt"
    path.write_text(box_net(0.0, 0.3, mode))
    loaded = load_net(path)
    inputs = feeds(2)
    want = expected_for(0.0, 0.3, mode)(inputs, None)
    ours = run_torch(loaded.graph, inputs, ["rois", "scored"])
    ref = forward(loaded, inputs, outputs=["rois", "scored"])
    for name in ("rois", "scored"):
        np.testing.assert_allclose(ours[name], want[name], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(ref[name], want[name], rtol=1e-5, atol=1e-4)
    with pytest.raises(UnsupportedLayersError, match=f"nms_type {mode}"):
        to_onnx(loaded.graph)


def decode_bbox_loops(offsets, rois, mean, std):
    """decode_bbox_layer.cpp's TEST Forward_cpu with DecodeBBoxesWithPrior, row by row."""
    out = []
    for i in range(len(rois)):
        img, x1, y1, x2, y2 = rois[i].ravel()
        pw, ph, cx, cy = x2 - x1 + 1, y2 - y1 + 1, 0.5 * (x2 + x1), 0.5 * (y2 + y1)
        bx, by, bw, bh = (offsets[i, 4 + a] * std[a] + mean[a] for a in range(4))
        tx, ty, tw, th = bx * pw + cx, by * ph + cy, pw * math.exp(bw), ph * math.exp(bh)
        tx, ty = tx - (tw - 1) / 2, ty - (th - 1) / 2
        out.append([img, tx, ty, tx + tw - 1, ty + th - 1])
    return np.array(out, F32).reshape(-1, 5, 1, 1)


DECODE_NET = (
    'layer { name: "in" type: "Input" top: "o" top: "r" input_param { shape { dim: 6 dim: 8 } '
    "shape { dim: 6 dim: 5 dim: 1 dim: 1 } } }\n"
    'layer { name: "d" type: "DecodeBBox" bottom: "o" bottom: "r" top: "b" bbox_reg_param { '
    "bbox_mean: 0.1 bbox_mean: -0.1 bbox_mean: 0 bbox_mean: 0.05 "
    "bbox_std: 0.1 bbox_std: 0.1 bbox_std: 0.2 bbox_std: 0.2 } }"
)


def decode_feeds(n):
    rng = np.random.default_rng(5)
    corner = rng.uniform(0, 200, (6, 2))
    size = rng.uniform(1, 80, (6, 2))
    rois = np.concatenate([rng.integers(0, 2, (6, 1)), corner, corner + size], axis=1)
    return {"o": rng.normal(0, 1, (6, 8)).astype(F32), "r": rois.reshape(6, 5, 1, 1).astype(F32)}


def test_decode_bbox(layer_check):
    def expected(i, w):
        o, r = i["o"].astype(np.float64), i["r"].astype(np.float64)
        return {"b": decode_bbox_loops(o, r, (0.1, -0.1, 0, 0.05), (0.1, 0.1, 0.2, 0.2))}

    layer_check(DECODE_NET, expected, feeds=decode_feeds, opencv=False, dynamic=False)


def test_decode_bbox_refuses_a_third_bottom_and_bad_widths(tmp_path):
    from caffe_compat.errors import CaffeCompatError
    from caffe_compat.ir.load import load_net

    third = DECODE_NET.replace('bottom: "r" top', 'bottom: "r" bottom: "o" top')
    wide = DECODE_NET.replace("dim: 6 dim: 8", "dim: 6 dim: 12")
    for text, why in ((third, "TRAIN-only"), (wide, "R x 8")):
        path = tmp_path / "net.prototxt"
        path.write_text(text)
        with pytest.raises(CaffeCompatError, match=why):
            load_net(path)


def jaccard_overlap(a, b, mode):
    """Cascade R-CNN's JaccardOverlap (bbox_util.cpp) on two [x1, y1, x2, y2] boxes."""
    if a[2] < a[0] or a[3] < a[1] or b[2] < b[0] or b[3] < b[1]:
        return 0.0
    ix1, iy1, ix2, iy2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = 0.0 if ix1 > ix2 or iy1 >= iy2 else (ix2 - ix1 + 1) * (iy2 - iy1 + 1)
    sa, sb = (a[2] - a[0] + 1) * (a[3] - a[1] + 1), (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    union = min(sa, sb) if mode == "IOMU" else sa if mode == "IOFU" else sa + sb - inter
    return 0.0 if union <= 0 else inter / union


def box_group_loops(maps, groups, strides, fg_thr, iou_thr, mode, min_size, max_nms, max_post):
    """box_group_output_layer.cpp's Forward_cpu with DecodeGroupBBoxes and ApplyNMS, written
    out as its loops (field_whr 4, field_xyr 2, std 0.1, 0.1, 0.2, 0.2)."""
    std, xy, wh = (0.1, 0.1, 0.2, 0.2), 0.5, math.log(4)
    out = []
    for i in range(maps[0].shape[0] // len(groups[0][0])):
        boxes = []
        for j in range(len(groups)):
            prob, box = maps[2 * j], maps[2 * j + 1]
            fw, fh = groups[j]
            height, width = prob.shape[2:]
            for k in range(len(fw)):
                for pos in range(height * width):
                    h, w = divmod(pos, width)
                    score = float(F32(1 - prob[i * len(fw) + k, 0, h, w]))  # Dtype: float
                    if score < fg_thr:
                        continue
                    bx, by, bw, bh = (box[i * len(fw) + k, a, h, w] * std[a] for a in range(4))
                    bx, by = min(max(bx, -xy), xy), min(max(by, -xy), xy)
                    bw, bh = min(max(bw, -wh), wh), min(max(bh, -wh), wh)
                    bx = bx * fw[k] + (w + 0.5) * strides[j]
                    by = by * fh[k] + (h + 0.5) * strides[j]
                    bw, bh = fw[k] * math.exp(bw), fh[k] * math.exp(bh)
                    x1, y1 = bx - bw / 2, by - bh / 2
                    x2, y2 = x1 + bw - 1, y1 + bh - 1
                    x1, y1 = max(0, x1), max(0, y1)
                    x2, y2 = min(width * strides[j], x2), min(height * strides[j], y2)
                    if x2 - x1 + 1 >= min_size and y2 - y1 + 1 >= min_size:
                        boxes.append((score, (x1, y1, x2, y2)))
        boxes.sort(key=lambda b: -b[0])  # no equal scores here
        if max_nms > 0:
            boxes = boxes[:max_nms]
        kept = [True] * len(boxes)
        for a in range(len(boxes)):
            if kept[a]:
                for b in range(a + 1, len(boxes)):
                    if kept[b] and jaccard_overlap(boxes[a][1], boxes[b][1], mode) > iou_thr:
                        kept[b] = False
        boxes = [b for b, k in zip(boxes, kept) if k]
        if max_post > 0:
            boxes = boxes[:max_post]
        out += [[i, *corners, score] for score, corners in boxes]
    if not out:
        return np.array([[0, 1, 1, 10, 10]], F32).reshape(1, 5, 1, 1), np.zeros((1, 6, 1, 1), F32)
    rows = np.array(out, F32)
    return rows[:, :5].reshape(-1, 5, 1, 1), rows.reshape(-1, 6, 1, 1)


GROUPS = (((24, 40), (40, 24)), ((64,), (64,)))


def group_net(fg_thr=0.3, mode="IOU", extra="") -> str:
    return (
        'layer { name: "maps" type: "Input" top: "p0" top: "b0" top: "p1" top: "b1" input_param { '
        "shape { dim: 4 dim: 2 dim: 4 dim: 5 } shape { dim: 4 dim: 4 dim: 4 dim: 5 } "
        "shape { dim: 2 dim: 2 dim: 2 dim: 3 } shape { dim: 2 dim: 4 dim: 2 dim: 3 } } }\n"
        'layer { name: "box" type: "BoxGroupOutput" bottom: "p0" bottom: "b0" bottom: "p1" '
        'bottom: "b1" top: "rois" top: "scored" box_group_output_param { '
        f'fg_thr: {fg_thr} iou_thr: 0.4 nms_type: "{mode}" '
        "box_group_param { field_w: 24 field_w: 40 field_h: 40 field_h: 24 stride: 8 } "
        "box_group_param { field_w: 64 field_h: 64 stride: 16 } "
        f"field_whr: 4 field_xyr: 2 min_size: 6 {extra} }} bbox_reg_param {{ bbox_mean: 0 "
        "bbox_mean: 0 bbox_mean: 0 bbox_mean: 0 bbox_std: 0.1 bbox_std: 0.1 bbox_std: 0.2 "
        "bbox_std: 0.2 } }"
    )


def group_feeds(n):
    rng = np.random.default_rng(4)
    return {
        "p0": rng.uniform(0, 1, (4, 2, 4, 5)).astype(F32),
        "b0": rng.normal(0, 3, (4, 4, 4, 5)).astype(F32),
        "p1": rng.uniform(0, 1, (2, 2, 2, 3)).astype(F32),
        "b1": rng.normal(0, 3, (2, 4, 2, 3)).astype(F32),
    }


def group_expected(fg_thr, mode="IOU", max_nms=0, max_post=0):
    def expected(i, w):
        maps = [i[k].astype(np.float64) for k in ("p0", "b0", "p1", "b1")]
        rois, scored = box_group_loops(
            maps, GROUPS, (8, 16), fg_thr, 0.4, mode, 6, max_nms, max_post
        )
        return {"rois": rois, "scored": scored}

    return expected


@pytest.mark.parametrize(
    "fg_thr, extra, cuts",
    [
        (0.3, "", (0, 0)),
        (0.0, "max_nms_num: 12 max_post_nms_num: 5", (12, 5)),
        (2.0, "", (0, 0)),  # nothing: the fork's dummy ROI
    ],
)
def test_box_group_output(layer_check, fg_thr, extra, cuts):
    layer_check(
        group_net(fg_thr, "IOU", extra),
        group_expected(fg_thr, "IOU", *cuts),
        feeds=group_feeds,
        opencv=False,
        dynamic=False,
    )


@pytest.mark.parametrize("mode", ["IOMU", "IOFU"])
def test_box_group_output_other_modes_in_torch_and_the_reference(tmp_path, mode):
    from caffe_compat.converters.onnx.export import to_onnx
    from caffe_compat.errors import UnsupportedLayersError
    from caffe_compat.ir.load import load_net
    from caffe_compat.reference import forward
    from caffe_compat.verify.backends import run_torch

    path = tmp_path / "net.prototxt"
    path.write_text(group_net(0.2, mode))
    loaded = load_net(path)
    inputs = group_feeds(2)
    want = group_expected(0.2, mode)(inputs, None)
    ours = run_torch(loaded.graph, inputs, ["rois", "scored"])
    ref = forward(loaded, inputs, outputs=["rois", "scored"])
    for name in ("rois", "scored"):
        np.testing.assert_allclose(ours[name], want[name], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(ref[name], want[name], rtol=1e-5, atol=1e-4)
    with pytest.raises(UnsupportedLayersError, match=f"nms_type {mode}"):
        to_onnx(loaded.graph)


def test_box_group_output_equal_scores_keep_the_earlier_first(layer_check):
    """Background probabilities under 6e-8 all score 1.0 in the fork's float: its order among
    them is unspecified; every back end keeps the earlier candidate first (the float64
    reference included, ONNX's NMS too)."""

    def tied(n):
        maps, rng = group_feeds(n), np.random.default_rng(1)
        for p in ("p0", "p1"):
            background = maps[p][:, 0]
            low = rng.uniform(size=background.shape) < 0.6
            background[low] = rng.uniform(0, 5e-8, size=int(low.sum()))
        return maps

    layer_check(group_net(0.3), group_expected(0.3), feeds=tied, opencv=False, dynamic=False)


@pytest.mark.parametrize("mode", ["IOU", "IOMU", "IOFU"])
@pytest.mark.parametrize("most", [0, 1, 9, 40])
def test_blocked_nms_keeps_what_the_pairwise_loop_keeps(mode, most):
    """``greedy_nms`` settles a few boxes at a time and stops at ``most`` kept: on 60 crowded
    boxes (blocks of 7, so kept boxes from earlier blocks suppress later ones) it keeps what
    the fork's pairwise loop keeps, cut to ``most``, for both layers' overlaps."""
    import torch

    from caffe_compat.converters.torch._base import greedy_nms
    from caffe_compat.converters.torch.box_output import _jaccard, _overlap

    rng = np.random.default_rng(5)
    xywh = np.concatenate([rng.uniform(0, 30, (60, 2)), rng.uniform(-2, 25, (60, 2))], 1)
    corners = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    cases = [(xywh, _overlap, box_iou), (corners, _jaccard, jaccard_overlap)]
    for rows, ours, theirs in cases:
        rows = rows.astype(F32).astype(np.float64)  # the values torch sees
        kept: list[int] = []
        for b in range(len(rows)):  # the fork's loop: suppressed by any earlier kept box
            if all(theirs(rows[a], rows[b], mode) <= 0.4 for a in kept):
                kept.append(b)
        want = kept[:most] if most else kept
        boxes = torch.from_numpy(rows.astype(F32))

        def suppresses(i, j, ours=ours, boxes=boxes):
            return ours(boxes[i], boxes[j], mode) > 0.4

        got = greedy_nms(len(rows), suppresses, most, 7)
        assert got.tolist() == want
        assert 7 < len(kept) < len(rows)  # several blocks, and some boxes suppressed
