"""SSD's DetectionOutput, Caffe-exact, in vectorised PyTorch: the one implementation behind the
PyTorch back end and behind the ONNX split path.

What Caffe's CPU forward does, and this reproduces (W. Liu's ``detection_output_layer.cpp`` and
``bbox_util.cpp``):

1. decode every prior's box (CORNER, CENTER_SIZE or CORNER_SIZE; variances from the prior blob
   unless ``variance_encoded_in_target``), in float32;
2. per image and per foreground class: candidates are scores strictly above
   ``confidence_threshold``, stable-sorted by score (ties: lower prior first), cut to ``top_k``;
   greedy NMS keeps a candidate when its IoU with every kept box is <= the threshold, which is
   multiplied by ``eta`` after each kept box while it is above 0.5. IoU is Caffe's: boxes with
   xmax < xmin or ymax < ymin have size 0, and boxes that only touch do not overlap;
3. per image, when more than ``keep_top_k`` (> -1) boxes survive over all classes, the
   ``keep_top_k`` best scores are kept;
4. rows ``[image, label, score, xmin, ymin, xmax, ymax]`` ordered by image, then label, then
   score (descending); shape 1 x 1 x R x 7. When no image has a detection, one row
   ``[i, -1, -1, -1, -1, -1, -1]`` per image.

Caffe's ``keep_top_k`` cut uses ``std::sort``, which leaves the order of exactly equal scores
unspecified; here ties go to the lower class, then the lower prior. ``save_output_param`` and
``visualize`` only write files or draw images in Caffe and leave the top alone; they are ignored.

NMS is greedy and so sequential, but it is computed without a loop per box: candidates are taken
in blocks, and within a block the kept set is the unique fixed point of "kept = not suppressed by
an earlier kept box", found by iterating from "all kept" (position i is final after i rounds,
and in practice a handful of rounds suffice). Boxes kept in earlier blocks are compared at once.

**Finishing an ONNX model.** ``to_onnx`` computes DetectionOutput inside the graph whenever
ONNX's NonMaxSuppression can reproduce it (every setting except an adaptive threshold, i.e.
``eta < 1`` with ``nms_threshold > 0.5``). For the rest, export the net without its
DetectionOutput layers and finish here::

    head = split_detection_output(graph)  # its outputs: each DetectionOutput's three bottoms
    session = onnxruntime.InferenceSession(to_onnx(head).SerializeToString())
    values = dict(zip(head.outputs, session.run(head.outputs, feeds)))
    for layer, (loc, conf, prior) in head_inputs(graph).items():
        rows = detection_output(values[loc], values[conf], values[prior], graph.node(layer))
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ...ir.graph import Graph, Node
from ...proto import caffe_pb2
from ...shapes.detection import ROW, DetectionSettings, detection_settings, num_priors

CORNER = caffe_pb2.PriorBoxParameter.CORNER
CENTER_SIZE = caffe_pb2.PriorBoxParameter.CENTER_SIZE
CORNER_SIZE = caffe_pb2.PriorBoxParameter.CORNER_SIZE
_BLOCK_BUDGET = 1 << 22  # elements of one block's IoU matrices, across all (image, class) pairs


def decode_boxes(loc: torch.Tensor, prior: torch.Tensor, s: DetectionSettings) -> torch.Tensor:
    """(B, P, L, 4) location predictions -> (B, L, P, 4) boxes, with Caffe's float32 formulas."""
    p = loc.shape[1]
    flat = prior.reshape(-1).to(loc.dtype)
    priors = flat[: p * 4].reshape(p, 4)
    offsets = loc.permute(0, 2, 1, 3)
    if not s.variance_encoded_in_target:
        offsets = offsets * flat[p * 4 : 2 * p * 4].reshape(p, 4)
    if s.code_type == CORNER:
        return priors + offsets
    x1, y1, x2, y2 = priors.unbind(-1)
    width, height = x2 - x1, y2 - y1
    if s.code_type == CORNER_SIZE:
        return priors + offsets * torch.stack([width, height, width, height], -1)
    if s.code_type != CENTER_SIZE:
        raise ValueError(f"unknown code_type {s.code_type}")
    dx, dy, dw, dh = offsets.unbind(-1)
    cx = dx * width + (x1 + x2) * 0.5
    cy = dy * height + (y1 + y2) * 0.5
    half_w = torch.exp(dw) * width * 0.5
    half_h = torch.exp(dh) * height * 0.5
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1)


def box_sizes(boxes: torch.Tensor) -> torch.Tensor:
    """Caffe's BBoxSize: width x height, 0 for an inverted box."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    inverted = (x2 < x1) | (y2 < y1)
    return torch.where(inverted, torch.zeros_like(x1), (x2 - x1) * (y2 - y1))


def iou(
    a: torch.Tensor, b: torch.Tensor, size_a: torch.Tensor, size_b: torch.Tensor
) -> torch.Tensor:
    """Caffe's JaccardOverlap of (G, n, 4) against (G, m, 4) boxes -> (G, n, m), float32."""
    iw = torch.minimum(a[..., 2:3], b[..., 2][:, None]) - torch.maximum(
        a[..., 0:1], b[..., 0][:, None]
    )
    ih = torch.minimum(a[..., 3:4], b[..., 3][:, None]) - torch.maximum(
        a[..., 1:2], b[..., 1][:, None]
    )
    inter = iw * ih
    union = size_a[..., None] + size_b[:, None] - inter
    overlap = (iw > 0) & (ih > 0)
    return torch.where(overlap, inter / union, torch.zeros_like(inter))


def greedy_nms(boxes: torch.Tensor, valid: torch.Tensor, thresholds: np.ndarray) -> torch.Tensor:
    """Caffe's ApplyNMSFast on (G, K, 4) candidates already in score order; ``valid`` (G, K)
    marks real candidates; ``thresholds[n]`` is the threshold after n kept boxes. -> kept (G, K)."""
    g, k = valid.shape
    sizes = box_sizes(boxes)
    table = torch.from_numpy(thresholds).to(boxes.device)
    adaptive = len(thresholds) > 1
    keep = torch.zeros_like(valid)
    kept_boxes, kept_sizes = boxes[:, :0], sizes[:, :0]
    kept_mask = valid[:, :0]
    kept_count = torch.zeros(g, dtype=torch.long, device=boxes.device)
    start = 0
    while start < k:
        # Keep both IoU matrices (block x block, block x kept so far) within the budget.
        columns = max(kept_boxes.shape[1], 1)
        block = min(512, math.isqrt(_BLOCK_BUDGET // g), _BLOCK_BUDGET // (g * columns))
        stop = min(start + max(32, block), k)
        ok = valid[:, start:stop]
        if not bool(ok.any()):
            break  # candidates form a prefix of every row
        bx, sz = boxes[:, start:stop], sizes[:, start:stop]
        inside = iou(bx, bx, sz, sz)
        before = iou(bx, kept_boxes, sz, kept_sizes)
        earlier = torch.ones(stop - start, stop - start, dtype=torch.bool, device=boxes.device)
        earlier = earlier.tril(-1)  # [i, j]: j comes before i
        if not adaptive:
            t = table[0]
            blocked = ((before > t) & kept_mask[:, None]).any(-1)
            over = (inside > t) & earlier
        current = ok
        while True:
            if adaptive:
                seen = kept_count[:, None] + torch.cumsum(current, 1) - current.long()
                t = table[seen.clamp(max=len(thresholds) - 1)][..., None]
                blocked = ((before > t) & kept_mask[:, None]).any(-1)
                over = (inside > t) & earlier
            updated = ok & ~blocked & ~(over & current[:, None]).any(-1)
            if torch.equal(updated, current):
                break
            current = updated
        keep[:, start:stop] = current
        counts = current.sum(1)
        width = int(counts.max())
        if width:
            pick = torch.argsort((~current).to(torch.int8), dim=1, stable=True)[:, :width]
            kept_boxes = torch.cat([kept_boxes, bx.gather(1, pick[..., None].expand(-1, -1, 4))], 1)
            kept_sizes = torch.cat([kept_sizes, sz.gather(1, pick)], 1)
            mask = torch.arange(width, device=boxes.device)[None] < counts[:, None]
            kept_mask = torch.cat([kept_mask, mask], 1)
            kept_count = kept_count + counts
        start = stop
    return keep


def no_detections(batch: int, device: torch.device | None = None) -> torch.Tensor:
    """Caffe's output when nothing survives: one [i, -1, -1, -1, -1, -1, -1] row per image."""
    rows = torch.full((batch, ROW), -1.0, device=device)
    rows[:, 0] = torch.arange(batch, device=device, dtype=rows.dtype)
    return rows.reshape(1, 1, batch, ROW)


def detect(
    loc: torch.Tensor, conf: torch.Tensor, prior: torch.Tensor, s: DetectionSettings
) -> torch.Tensor:
    """DetectionOutput's top (1, 1, R, 7) for one batch of bottoms, exactly as Caffe's forward."""
    batch, priors = loc.shape[0], num_priors(tuple(prior.shape))
    device = loc.device
    fg = s.foreground
    if s.never_detects:
        return no_detections(batch, device)
    loc = loc.reshape(batch, priors, s.num_loc_classes, 4).float()
    boxes = decode_boxes(loc, prior, s)  # (B, L, P, 4)
    labels = torch.tensor(fg, device=device)
    scores = conf.reshape(batch, priors, s.num_classes).float().transpose(1, 2)[:, labels]
    per_class = boxes.expand(-1, len(fg), -1, -1) if s.share_location else boxes[:, labels]
    groups = batch * len(fg)
    scores = scores.reshape(groups, priors)
    candidate = scores > s.confidence_threshold
    ranked, order = torch.sort(
        torch.where(candidate, scores, -torch.inf), dim=1, descending=True, stable=True
    )
    count = candidate.sum(1)
    width = int(count.max())
    if s.top_k >= 0:
        width = min(width, s.top_k)
    if width == 0:
        return no_detections(batch, device)
    ranked, order = ranked[:, :width], order[:, :width]
    valid = torch.arange(width, device=device)[None] < count[:, None]
    ordered = per_class.reshape(groups, priors, 4).gather(1, order[..., None].expand(-1, -1, 4))
    keep = greedy_nms(ordered, valid, s.thresholds(width))
    kept = torch.full((groups, priors), -torch.inf, device=device)
    kept.scatter_(1, order, torch.where(keep, ranked, -torch.inf))

    flat = kept.reshape(batch, len(fg) * priors)
    best, index = torch.sort(flat, dim=1, descending=True, stable=True)
    width = int((best > -torch.inf).sum(1).max())
    if s.keep_top_k > -1:
        width = min(width, s.keep_top_k)
    if width == 0:
        return no_detections(batch, device)
    best, index = best[:, :width], index[:, :width]
    cls, box_index = index // priors, index % priors
    # Caffe's order: by label, then by score; the position in ``best`` is the score rank.
    perm = torch.argsort(cls * width + torch.arange(width, device=device)[None], dim=1)
    best, cls, box_index = best.gather(1, perm), cls.gather(1, perm), box_index.gather(1, perm)
    label = labels[cls]
    loc_label = torch.zeros_like(label) if s.share_location else label
    image = torch.arange(batch, device=device)[:, None].expand(-1, width)
    picked = boxes[image, loc_label, box_index]  # (B, width, 4)
    rows = torch.cat(
        [image[..., None].float(), label[..., None].float(), best[..., None], picked], -1
    )
    return rows[best > -torch.inf].reshape(1, 1, -1, ROW)


def _settings(layer: Node | caffe_pb2.LayerParameter | caffe_pb2.DetectionOutputParameter):
    if isinstance(layer, Node):
        layer = layer.param
    if isinstance(layer, caffe_pb2.LayerParameter):
        layer = layer.detection_output_param
    return detection_settings(layer)


def detection_output(
    loc: np.ndarray | torch.Tensor,
    conf: np.ndarray | torch.Tensor,
    prior: np.ndarray | torch.Tensor,
    layer: Node | caffe_pb2.LayerParameter | caffe_pb2.DetectionOutputParameter,
) -> np.ndarray:
    """Caffe's DetectionOutput on arrays (its three bottoms) -> (1, 1, R, 7) float32 numpy.

    ``layer`` is the DetectionOutput node, its LayerParameter or its DetectionOutputParameter.
    Use it to finish a model exported by :func:`split_detection_output`."""
    tensors = [
        torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a) for a in (loc, conf, prior)
    ]
    with torch.no_grad():
        return detect(*tensors, _settings(layer)).cpu().numpy()


def head_inputs(graph: Graph) -> dict[str, tuple[str, str, str]]:
    """For each DetectionOutput layer, the values (ONNX output names of the split model; the
    Caffe blob names unless a later in-place layer rewrote the blob) of loc, conf and prior."""
    return {
        node.name: (node.inputs[0], node.inputs[1], node.inputs[2])
        for node in graph.nodes
        if node.type == "DetectionOutput"
    }


def split_detection_output(graph: Graph) -> Graph:
    """The graph without its DetectionOutput layers; their bottoms become the outputs.

    Export this with ``to_onnx`` when the layer cannot be computed inside ONNX, then finish each
    layer with :func:`detection_output` on the outputs named by :func:`head_inputs`."""
    heads = [n for n in graph.nodes if n.type == "DetectionOutput"]
    removed = {v for n in heads for v in n.outputs}
    if any(v in removed for n in graph.nodes if n.type != "DetectionOutput" for v in n.inputs):
        raise ValueError("a layer consumes DetectionOutput's top; the net cannot be split there")
    outputs = [v for v in graph.outputs if v not in removed]
    for node in heads:
        outputs.extend(v for v in node.inputs[:3] if v not in outputs)
    return dataclasses.replace(
        graph,
        nodes=[n for n in graph.nodes if n.type != "DetectionOutput"],
        outputs=outputs,
        shapes={v: s for v, s in graph.shapes.items() if v not in removed},
        blob_of={v: b for v, b in graph.blob_of.items() if v not in removed},
        final={b: v for b, v in graph.final.items() if v not in removed},
    )
