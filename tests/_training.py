"""Shared test helper for the training engine (tests/ is on pytest's pythonpath).

``judge(net, feeds)`` runs one ``forward_backward`` of a ``TrainNet`` and the float64
reference's training pass (caffe_compat.reference.backward) on the same inputs, blobs and
Dropout masks, and compares the loss, every value, every parameter diff, every blob diff Caffe
computes and BatchNorm's updated statistics, each within ``tol`` x the largest magnitude of the
reference's array. It returns the worst relative error per kind.
"""

from __future__ import annotations

import numpy as np

from caffe_compat.reference.backward import forward_backward
from caffe_compat.train import TrainNet

FLOOR = 1e-7  # absolute: arrays that are all zero in float64 may hold float32 round-off


def _error(mine, ref) -> float:
    mine = np.asarray(mine, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert mine.shape == ref.shape, (mine.shape, ref.shape)
    scale = max(float(np.max(np.abs(ref), initial=0.0)), FLOOR / 1e-5)
    return float(np.max(np.abs(mine - ref), initial=0.0)) / scale


def judge(net: TrainNet, feeds=None, *, tol: float = 1e-5) -> dict[str, float]:
    before = net.layer_blobs()
    net.clear_param_diffs()
    loss = net.forward_backward(feeds)
    blobs = net.blobs
    inputs = {name: blobs[name].data.cpu().numpy() for name in net.graph.inputs}
    masks = {name: mask.cpu().numpy() for name, mask in net.dropout_masks.items()}
    for node in net.graph.nodes:
        node.blobs = [b.astype(np.float64) for b in before.get(node.name, [])]
    try:
        ref = forward_backward(net.graph, inputs, random=masks, force_backward=net.force_backward)
    finally:
        net._sync_graph()
    worst = {"loss": abs(loss - ref.loss) / max(abs(ref.loss), 1.0)}
    worst["values"] = max(
        (_error(net._env[v].detach().cpu(), a) for v, a in ref.values.items() if v in net._env),
        default=0.0,
    )
    param_errors = []
    for name, row in net.params.items():
        for j, param in enumerate(row):
            expected = ref.params[name][j]
            if expected is None:
                expected = np.zeros(param.shape)
            param_errors.append(_error(param.diff.cpu(), expected))
    worst["params"] = max(param_errors, default=0.0)
    worst["diffs"] = max(
        (_error(blobs[name].diff.cpu(), ref.diff(name)) for name in _diff_blobs(net, ref)),
        default=0.0,
    )
    after = net.layer_blobs()
    worst["statistics"] = max(
        (
            _error(after[layer][j], b)
            for layer, arrays in ref.blobs.items()
            for j, b in enumerate(arrays)
        ),
        default=0.0,
    )
    for kind, error in worst.items():
        assert error <= tol, f"{kind}: {error:.3g} x max from the float64 reference ({worst})"
    return worst


def _diff_blobs(net, ref) -> set[str]:
    names = set()
    for value in ref.diffs:
        name = net.graph.blob_of.get(value, value)
        if ref.diff(name) is not None:
            names.add(name)
    return names


def inputs_layer(**arrays: np.ndarray) -> str:
    """One Input layer declaring a top per array, with the array's shape."""
    tops = " ".join(f'top: "{n}"' for n in arrays)
    shapes = " ".join(
        "shape { " + " ".join(f"dim: {d}" for d in a.shape) + " }" for a in arrays.values()
    )
    return f'layer {{ name: "input" type: "Input" {tops} input_param {{ {shapes} }} }}\n'


def make_net(tmp_path, text: str, **options) -> TrainNet:
    """A TrainNet from prototxt text written to ``tmp_path``."""
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    options.setdefault("seed", 5)
    return TrainNet(path, **options)
