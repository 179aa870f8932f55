"""Record real BVLC Caffe's forward and backward of the recurrent nets in this folder (the test data
of tests/reference/test_recurrent.py). Run with pycaffe from a real Caffe build, never in CI:

    PYTHONPATH=<caffe>/python LD_LIBRARY_PATH=<caffe>/.build_release/lib GLOG_minloglevel=2 \\
        <caffe venv>/bin/python tests/reference/data/recurrent/record.py

For each ``<case>.prototxt`` (``force_backward: true``, no loss) it draws the inputs, the sequence
markers (``cont*``: 0 or 1, about one in three a reset, also inside the sequences) and the
parameters from a fixed seed, runs ``forward()`` once on a fresh net (so the state carried in
without expose_hidden is Caffe's initial zero), sets a random diff on every net output (the
exposed h_T/c_T tops included) and runs ``backward()``. It writes ``<case>.npz``:
``input/<blob>``, ``param/<layer>/<i>``, ``data/<blob>`` for every blob, ``top_diff/<blob>``,
``diff/<input>`` and ``param_diff/<layer>/<i>``, and ``<case>.caffemodel`` as Caffe saves the net
(its blobs in Caffe's own layout). Only pycaffe and numpy are needed.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import caffe
import numpy as np

HERE = Path(__file__).resolve().parent


def draw(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name.startswith("cont"):
        return (rng.uniform(size=shape) > 0.35).astype(np.float32)
    return rng.normal(0.0, 1.0, size=shape).astype(np.float32)


def record(prototxt: Path) -> None:
    net = caffe.Net(str(prototxt), caffe.TEST)
    rng = np.random.default_rng(zlib.crc32(prototxt.stem.encode()))
    out: dict[str, np.ndarray] = {}
    for name in net.inputs:
        out[f"input/{name}"] = draw(name, net.blobs[name].data.shape, rng)
        net.blobs[name].data[...] = out[f"input/{name}"]
    for layer, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            blob.data[...] = rng.normal(0.0, 0.5, size=blob.shape)
            out[f"param/{layer}/{i}"] = blob.data.copy()
    net.forward()
    for name, blob in net.blobs.items():
        out[f"data/{name}"] = blob.data.copy()
    diffs = {
        name: rng.normal(0.0, 1.0, net.blobs[name].shape).astype(np.float32) for name in net.outputs
    }
    for name, diff in diffs.items():
        out[f"top_diff/{name}"] = diff
    net.backward(**diffs)
    for name in net.inputs:
        out[f"diff/{name}"] = net.blobs[name].diff.copy()
    for layer, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            out[f"param_diff/{layer}/{i}"] = blob.diff.copy()
    np.savez_compressed(HERE / f"{prototxt.stem}.npz", **out)
    if net.params:
        net.save(str(HERE / f"{prototxt.stem}.caffemodel"))  # Caffe's own blob layout
    print(f"{prototxt.name}: {len(out)} arrays")


def main() -> int:
    caffe.set_mode_cpu()
    for prototxt in sorted(HERE.glob("*.prototxt")):
        record(prototxt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
