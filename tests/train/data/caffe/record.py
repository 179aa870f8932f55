"""Record real BVLC Caffe's forward and backward on the nets in this folder (the test data of
tests/train/test_real_caffe.py). Run with pycaffe from a real Caffe build, not in CI:

    PYTHONPATH=<caffe>/python LD_LIBRARY_PATH=<caffe>/.build_release/lib GLOG_minloglevel=2 \\
        <caffe venv>/bin/python tests/train/data/caffe/record.py

For each ``<case>.prototxt`` it draws the inputs and the parameters from a fixed seed, sets them
in ``caffe.Net(<case>, caffe.TRAIN)`` (or TEST for ``*_test.prototxt``), runs ``forward()`` and
``backward()`` once, then a second time with the same inputs (BatchNorm's sums move on, parameter
diffs accumulate), and writes ``<case>.npz``: ``input/<blob>``, ``param/<layer>/<i>`` (before),
``data/<blob>`` and ``diff/<blob>`` (after the first pass), ``param_diff/<layer>/<i>``
(after the first pass, then ``param_diff2/...`` after the second), ``after/<layer>/<i>`` (the
blobs after both passes: BatchNorm's statistics). Only pycaffe and numpy are needed.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import caffe
import numpy as np

HERE = Path(__file__).resolve().parent
LABEL_RANGES = {"label": 5, "labels8": 8, "similar": 2, "index": 6}


def draw(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name in LABEL_RANGES:
        return rng.integers(0, LABEL_RANGES[name], size=shape).astype(np.float32)
    if name.startswith("ties"):  # small integers: ties for MAX, zeros for ReLU's kink
        return rng.integers(-1, 3, size=shape).astype(np.float32)
    if name.startswith("positive"):
        return rng.uniform(0.2, 2.0, size=shape).astype(np.float32)
    if name.startswith("prob"):
        return rng.uniform(0.05, 1.0, size=shape).astype(np.float32)
    return rng.normal(0.0, 1.0, size=shape).astype(np.float32)


def record(prototxt: Path) -> None:
    phase = caffe.TEST if prototxt.stem.endswith("_test") else caffe.TRAIN
    net = caffe.Net(str(prototxt), phase)
    rng = np.random.default_rng(zlib.crc32(prototxt.stem.encode()))
    out: dict[str, np.ndarray] = {}
    for name in net.inputs:
        out[f"input/{name}"] = draw(name, net.blobs[name].data.shape, rng)
    for layer, blobs in net.params.items():
        kind = net.layer_dict[layer].type
        for i, blob in enumerate(blobs):
            if kind == "BatchNorm":
                value = [
                    rng.normal(0, 1, blob.shape),
                    rng.uniform(1, 3, blob.shape),
                    np.full(blob.shape, 2.0),
                ][i]
            else:
                value = rng.normal(0.0, 0.5, size=blob.shape)
            blob.data[...] = value
            out[f"param/{layer}/{i}"] = blob.data.copy()
    for name in net.inputs:
        net.blobs[name].data[...] = out[f"input/{name}"]
    for step in (1, 2):
        net.forward()
        net.backward()
        if step == 1:
            for name, blob in net.blobs.items():
                out[f"data/{name}"] = blob.data.copy()
                out[f"diff/{name}"] = blob.diff.copy()
        for layer, blobs in net.params.items():
            for i, blob in enumerate(blobs):
                out[f"param_diff{'' if step == 1 else '2'}/{layer}/{i}"] = blob.diff.copy()
    for layer, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            out[f"after/{layer}/{i}"] = blob.data.copy()
    np.savez_compressed(prototxt.with_suffix(".npz"), **out)
    print(f"{prototxt.name}: {len(out)} arrays")


def write_infogain_matrix(path: Path) -> None:
    """InfogainLoss's H for infogain.prototxt: 5 x 5, a BlobProto as Caffe writes one."""
    h = np.random.default_rng(5).uniform(0, 1, size=(1, 1, 5, 5)).astype(np.float32)
    blob = caffe.io.array_to_blobproto(h)
    path.write_bytes(blob.SerializeToString())


def main() -> None:
    write_infogain_matrix(HERE / "infogain_H.binaryproto")
    cases = sys.argv[1:] or sorted(p.name for p in HERE.glob("*.prototxt"))
    for name in cases:
        record(HERE / name)


if __name__ == "__main__":
    main()
