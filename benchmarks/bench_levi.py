"""Levi-Hassner age net: conversion time, then inference images/s for PyTorch eager, ONNX Runtime
and OpenCV DNN (Caffe reader) at batch 1 and 32, all measured in this one run on this machine.

    python benchmarks/bench_levi.py [--prototxt deploy_age.prototxt] [--threads N] [--cuda]

Without --prototxt it uses the zoo's definition with synthesized weights (timings do not depend
on the weight values). Ratios are against OpenCV DNN measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _zoo_prototxt() -> Path:
    from importlib.resources import files

    return Path(str(files("caffe_compat.zoo") / "levi_hassner_age.prototxt"))


def _rate(run: Callable[[], object], batch: int, seconds: float) -> float:
    """Images per second: median over repeated timed runs after warm-up."""
    for _ in range(3):
        run()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return batch / statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prototxt", type=Path, default=None)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: library default)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per case")
    parser.add_argument("--cuda", action="store_true", help="also time PyTorch on CUDA")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import cv2
    import onnxruntime as ort
    import torch

    from caffe_compat.io.writer import definitions_only, write_caffemodel
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.convert import convert
    from caffe_compat.tools.synth import synthesize

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    prototxt = args.prototxt or _zoo_prototxt()
    results: dict[str, object] = {"machine_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = args.weights
        if weights is None:
            loaded = load_net(prototxt)
            blobs = synthesize(loaded, seed=0, method="he")
            weights = folder / "age_net.caffemodel"
            write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
        start = time.perf_counter()
        result = convert(prototxt, weights, out_prefix=folder / "age", check=False)
        results["convert_s"] = time.perf_counter() - start
        results["convert_phases_s"] = result.timings
        start = time.perf_counter()
        load_net(prototxt, weights)
        results["read_s"] = time.perf_counter() - start

        loaded = load_net(prototxt, weights)
        from caffe_compat.converters.torch.model import CaffeNet

        model = CaffeNet(loaded.graph)
        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(
            str(result.outputs["onnx"]), options, providers=["CPUExecutionProvider"]
        )
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
        name = next(iter(loaded.graph.inputs))
        rows = []
        for batch in (1, 32):
            x = np.random.default_rng(0).standard_normal((batch, 3, 227, 227)).astype(np.float32)
            tx = torch.from_numpy(x)

            def run_torch(tx: torch.Tensor = tx) -> object:
                with torch.inference_mode():
                    return model(tx)

            def run_ort(x: np.ndarray = x) -> object:
                return session.run(None, {name: x})

            def run_cv(x: np.ndarray = x) -> object:
                net.setInput(x)
                return net.forward()

            rates = {
                "opencv_dnn": _rate(run_cv, batch, args.seconds),
                "onnxruntime": _rate(run_ort, batch, args.seconds),
                "torch_eager": _rate(run_torch, batch, args.seconds),
            }
            if args.cuda and torch.cuda.is_available():
                gpu = CaffeNet(loaded.graph).cuda()
                gx = tx.cuda()

                def run_gpu(gx: torch.Tensor = gx, gpu: CaffeNet = gpu) -> object:
                    with torch.inference_mode():
                        out = gpu(gx)
                    torch.cuda.synchronize()
                    return out

                rates["torch_cuda"] = _rate(run_gpu, batch, args.seconds)
            rows.append((batch, rates))
    results["images_per_s"] = {str(b): r for b, r in rows}
    print(
        f"convert (read + build torch and ONNX + write): {results['convert_s']:.2f} s; "
        f"read alone {results['read_s']:.3f} s"
    )
    print(f"{'batch':>5}  {'backend':<12} {'images/s':>10}  {'vs OpenCV DNN':>13}")
    for batch, rates in rows:
        for backend, rate in rates.items():
            ratio = rate / rates["opencv_dnn"]
            print(f"{batch:>5}  {backend:<12} {rate:>10.1f}  {ratio:>12.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
