"""The reference against blobs real BVLC Caffe computed (../shared), blob by blob, and against
OpenCV 4's Caffe reader on the same Levi-Hassner files (where OpenCV is right: k = 1 LRN).

Tolerances: max(1e-5 x max|ref|, 1e-6) for the blobs up to the first InnerProduct (conv,
pooling, LRN, ReLU: Caffe's own float32 rounding is ~1e-6 relative there) and
max(1e-4 x max|ref|, 1e-5) from it on (long float32 dot products and the softmax).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from caffe_compat.ir.load import load_net
from caffe_compat.reference import forward

SHARED = Path(
    os.environ.get("CAFFE_COMPAT_SHARED") or Path(__file__).resolve().parents[3] / "shared"
)


LEVI = SHARED / "levi_hassner"


SETS = {
    "levi_hassner": (
        LEVI / "deploy_age.prototxt",
        LEVI / "caffe_reference" / "age_seed3_caffe_written.caffemodel",
        LEVI / "caffe_reference" / "age_seed3_blobs.npz",
    ),
    "caffe_semantics": (
        SHARED / "caffe_semantics" / "deploy.prototxt",
        SHARED / "caffe_semantics" / "weights.caffemodel",
        SHARED / "caffe_semantics" / "blobs.npz",
    ),
}


def files(name: str) -> tuple[Path, Path, Path]:
    paths = SETS[name]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"real-Caffe reference files are absent: {', '.join(missing)}")
    return paths


def limits(graph, blobs) -> dict[str, float]:
    """Each blob's tolerance by its place in the net: dense from the first InnerProduct on."""
    first_dense = next(
        (i for i, n in enumerate(graph.nodes) if n.type == "InnerProduct"), len(graph.nodes)
    )
    dense = {graph.blob_of[v] for n in graph.nodes[first_dense:] for v in n.outputs}
    out = {}
    for name, array in blobs.items():
        peak = float(np.abs(array).max())
        out[name] = max(1e-4 * peak, 1e-5) if name in dense else max(1e-5 * peak, 1e-6)
    return out


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_blob_matches_real_caffe(name):
    prototxt, weights, blobs_path = files(name)
    net = load_net(prototxt, weights)
    with np.load(blobs_path) as data:
        caffe = {k: data[k] for k in data.files}
    ours = forward(net, {"data": caffe["data"]})
    assert list(ours) == list(caffe)  # every blob of Caffe's net.blobs, in its order
    report = []
    for blob, limit in limits(net.graph, caffe).items():
        error = float(np.abs(ours[blob] - caffe[blob]).max())
        report.append(f"{blob}: {error:.2e} (limit {limit:.1e})")
        assert error <= limit, f"{name} {blob}: {error:.3g} > {limit:.3g}; " + "; ".join(report)
