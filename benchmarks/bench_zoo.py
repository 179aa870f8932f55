"""The classic model zoo at real input sizes: parity with OpenCV 4 and inference speed.

    python benchmarks/bench_zoo.py [--nets resnet50,googlenet] [--threads N] [--json out.json]

For each net (the project's own prototxts in tests/nets/data/) it synthesizes calibrated weights,
writes a real caffemodel, then

1. parity: max abs error of our PyTorch module (CPU) and our ONNX model in ONNX Runtime on the
   net's output against OpenCV 4's Caffe reader on the same files (Winograd convolution off, as in
   tests/nets), over 8 varied inputs (1 for FCN-8s at 500x500), with the argmax agreement and the
   number of distinct predicted classes;
2. speed: images/s of ONNX Runtime (CPU provider, our exported model) and OpenCV DNN (CPU, its
   defaults: fusion and Winograd on) at batch 1 and 8, measured in this one run on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the zoo fixtures live with the tests that use them


def _rate(run: Callable[[], object], batch: int, seconds: float) -> float:
    """Images per second: median of timed runs after one warm-up (at least 3 runs)."""
    run()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 3:
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return batch / statistics.median(samples)


def _exact_opencv(cv2) -> Callable:
    """OpenCV reads Caffe nets with Winograd off from here on (see tests/nets/conftest.py)."""
    original = cv2.dnn.readNetFromCaffe

    def read_exact(*args, **kwargs):
        net = original(*args, **kwargs)
        net.enableWinograd(False)
        return net

    cv2.dnn.readNetFromCaffe = read_exact
    return original


def parity(net, batch: int) -> dict[str, object]:
    from nets import _zoo

    graph = net.loaded.graph
    (output,) = graph.outputs
    report = _zoo.parity(net, _zoo.inputs(net, batch))
    rows = {
        c.backend: {"max_abs": c.max_abs, "max_ref": c.max_ref}
        for c in report.comparisons
        if c.value == output and c.reference == "opencv"
    }
    return {
        "output": output,
        "batch": batch,
        "passed": report.passed,
        "blobs_compared": len({c.value for c in report.comparisons}),
        "final_output": rows,
        "argmax": {a.backend: f"{a.agree}/{a.total}" for a in report.argmax},
        "distinct_classes": report.distinct_classes.get(output),
        "worst_relative": max(c.max_rel for c in report.comparisons),
    }


def speed(net, onnx_path: Path, read_caffe, seconds: float, threads: int) -> dict[str, float]:
    import cv2
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    cv_net = read_caffe(str(net.prototxt), str(net.weights))
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    name, shape = next(iter(net.loaded.graph.inputs.items()))
    rates: dict[str, float] = {}
    for batch in (1, 8):
        x = np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)

        def run_ort(x: np.ndarray = x) -> object:
            return session.run(None, {name: x})

        def run_cv(x: np.ndarray = x) -> object:
            cv_net.setInput(x)
            return cv_net.forward()

        rates[f"opencv_dnn_b{batch}"] = _rate(run_cv, batch, seconds)
        rates[f"onnxruntime_b{batch}"] = _rate(run_ort, batch, seconds)
    return rates


def main() -> None:
    from nets import _zoo

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nets", default=",".join(_zoo.NAMES))
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: library default)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per case")
    parser.add_argument("--no-parity", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import cv2
    import torch

    from caffe_compat.converters.onnx.export import save_onnx, to_onnx

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    results: dict[str, object] = {
        "threads": torch.get_num_threads(),
        "opencv": cv2.__version__,
        "nets": {},
    }
    read_caffe = cv2.dnn.readNetFromCaffe  # speed: OpenCV as users run it
    for name in args.nets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            heavy = name == "fcn8s"
            net = _zoo.synthesized(name, Path(tmp), batch=2 if heavy else 16)
            entry: dict[str, object] = {"input": next(iter(net.loaded.graph.inputs.values()))}
            if not args.no_parity:
                _exact_opencv(cv2)
                try:
                    entry["parity"] = parity(net, 1 if heavy else 8)
                finally:
                    cv2.dnn.readNetFromCaffe = read_caffe
            onnx_path = Path(tmp) / f"{name}.onnx"
            save_onnx(to_onnx(net.loaded.graph), onnx_path)
            entry["images_per_s"] = speed(net, onnx_path, read_caffe, args.seconds, args.threads)
            results["nets"][name] = entry  # type: ignore[index]
            print(_line(name, entry), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _line(name: str, entry: dict) -> str:
    rates = entry["images_per_s"]
    text = f"{name:<13}"
    if "parity" in entry:
        p = entry["parity"]
        errors = ", ".join(f"{b} {r['max_abs']:.2g}" for b, r in sorted(p["final_output"].items()))
        text += (
            f" {'PASS' if p['passed'] else 'FAIL'} {p['output']} max abs [{errors}]"
            f" argmax {p['argmax']} classes {p['distinct_classes']};"
        )
    for batch in (1, 8):
        cv, ort = rates[f"opencv_dnn_b{batch}"], rates[f"onnxruntime_b{batch}"]
        text += f" b{batch}: ORT {ort:.2f} / OpenCV {cv:.2f} img/s ({ort / cv:.2f}x);"
    return text


if __name__ == "__main__":
    main()
