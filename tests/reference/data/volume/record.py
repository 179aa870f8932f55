"""Record real BVLC Caffe's N-D Convolution on 5-D clips (N x C x L x H x W), forward and backward,
in the settings C3D's Convolution3D layers use (kernel kd x k x k, temporal and spatial pad and
stride): the computation caffe-compat runs Convolution3D as. Run with the Caffe oracle's own
Python (pycaffe + numpy only; see the project's notes on the oracle):

    PYTHONPATH=/work/caffe/python LD_LIBRARY_PATH=/work/caffe/.build_release/lib \\
        /work/caffe/venv/bin/python record.py

Writes conv3d.npz: per case, the input, weights, bias, top, and the bottom and parameter diffs
for a top diff drawn from the same generator.
"""

from __future__ import annotations

import os
import tempfile

import caffe
import numpy as np

# name: (input shape, num_output, kernel (kd, k, k), pad (tp, p, p), stride (ts, s, s))
CASES = {
    "c3d": ((2, 3, 5, 6, 7), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    "resnet_conv1": ((1, 3, 4, 9, 9), 2, (3, 7, 7), (1, 3, 3), (1, 2, 2)),
    "strided": ((2, 2, 6, 5, 5), 3, (2, 3, 3), (0, 1, 1), (2, 2, 2)),
}


def net_text(shape, num_output, kernel, pad, stride) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    ks = " ".join(f"kernel_size: {k}" for k in kernel)
    ps = " ".join(f"pad: {p}" for p in pad)
    ss = " ".join(f"stride: {s}" for s in stride)
    return (
        "force_backward: true\n"
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
        f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ '
        f"num_output: {num_output} {ks} {ps} {ss} }} }}\n"
    )


def main() -> None:
    caffe.set_mode_cpu()
    rng = np.random.default_rng(7)
    out = {}
    for name, (shape, num_output, kernel, pad, stride) in CASES.items():
        with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
            f.write(net_text(shape, num_output, kernel, pad, stride))
        net = caffe.Net(f.name, caffe.TEST)
        os.unlink(f.name)
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal(net.params["c"][0].data.shape).astype(np.float32)
        b = rng.standard_normal(net.params["c"][1].data.shape).astype(np.float32)
        net.params["c"][0].data[...] = w
        net.params["c"][1].data[...] = b
        net.blobs["data"].data[...] = x
        net.forward()
        top = net.blobs["c"].data.copy()
        g = rng.standard_normal(top.shape).astype(np.float32)
        net.blobs["c"].diff[...] = g
        net.backward()
        out.update(
            {
                f"{name}/data": x,
                f"{name}/weight": w,
                f"{name}/bias": b,
                f"{name}/top": top,
                f"{name}/top_diff": g,
                f"{name}/data_diff": net.blobs["data"].diff.copy(),
                f"{name}/weight_diff": net.params["c"][0].diff.copy(),
                f"{name}/bias_diff": net.params["c"][1].diff.copy(),
            }
        )
    np.savez_compressed(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv3d.npz"), **out
    )


if __name__ == "__main__":
    main()
