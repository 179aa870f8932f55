"""How fast, and in how much memory, a caffemodel reads: our reader against the physical floor and
against naive protobuf, on synthetic files of VGG16's and Levi-Hassner's real layer shapes.

    python benchmarks/bench_read.py [--workdir DIR] [--models vgg16,levi] [--repeat 3]
                                    [--skip-naive]

Each method runs in a fresh subprocess, so peak RSS (``ru_maxrss`` of that child) belongs to that
method alone; every child imports the same modules first, and their memory is reported as the
baseline. Linux carries a parent's peak RSS over into a child's ru_maxrss across exec, so the
parent stays small: models are written by a subprocess too, and the page cache is warmed through a
1 MiB buffer. The parent reads each file once beforehand, so every method starts from the page
cache.

    fromfile         np.fromfile of the whole file: one read into one array, the physical floor
    ours             read_caffemodel(path): owned, writable float32 arrays
    ours copy=False  read_caffemodel(path, copy=False): read-only views of a file map; pages are
                     read when first touched, so this row alone says little
    ...then touched  the same, then every value read once (one np.sum per blob)
    naive protobuf   NetParameter.ParseFromString(file bytes) + np.array(blob.data) per blob

Targets (the reading-layer issue): ours within 2x of np.fromfile's time, peak RSS under 1.5x the
file size (for small files the interpreter's baseline is subtracted: it is not the reader's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VGG16_CONVS = [  # (name, out, in): every kernel 3x3, pad 1
    ("conv1_1", 64, 3), ("conv1_2", 64, 64),
    ("conv2_1", 128, 64), ("conv2_2", 128, 128),
    ("conv3_1", 256, 128), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
    ("conv4_1", 512, 256), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512),
]  # fmt: skip
VGG16_FCS = [("fc6", 4096, 25088), ("fc7", 4096, 4096), ("fc8", 1000, 4096)]
LEVI_CONVS = [("conv1", 96, 3, 7), ("conv2", 256, 96, 5), ("conv3", 384, 256, 3)]
LEVI_FCS = [("fc6", 512, 18816), ("fc7", 512, 512), ("fc8", 8, 512)]  # age net (FACTS.md)

MODELS = {
    "vgg16": ("VGG16 (138 M parameters)", VGG16_CONVS, VGG16_FCS),
    "levi": ("Levi-Hassner age net", LEVI_CONVS, LEVI_FCS),
}
METHODS = {
    "fromfile": "np.fromfile (floor)",
    "ours": "ours (copy=True)",
    "view": "ours (copy=False)",
    "view-touch": "ours (copy=False), then touched",
    "naive": "naive protobuf",
}


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _write_model(path: Path, name: str, convs: list, fcs: list, seed: int = 0) -> None:
    """A V2 caffemodel with these layer shapes and random weights, written by our writer."""
    import numpy as np

    from caffe_compat.io import write_caffemodel
    from caffe_compat.proto import caffe_pb2

    rng = np.random.default_rng(seed)
    net = caffe_pb2.NetParameter(name=name)
    blobs: dict[str, list[np.ndarray]] = {}
    for conv in convs:
        layer_name, out, inp = conv[:3]
        kernel = conv[3] if len(conv) > 3 else 3
        layer = net.layer.add(name=layer_name, type="Convolution")
        layer.convolution_param.num_output = out
        layer.convolution_param.kernel_size.append(kernel)
        net.layer.add(name=layer_name.replace("conv", "relu"), type="ReLU")
        blobs[layer_name] = [
            rng.standard_normal((out, inp, kernel, kernel), dtype=np.float32),
            rng.standard_normal(out, dtype=np.float32),
        ]
    for layer_name, out, inp in fcs:
        layer = net.layer.add(name=layer_name, type="InnerProduct")
        layer.inner_product_param.num_output = out
        blobs[layer_name] = [
            rng.standard_normal((out, inp), dtype=np.float32),
            rng.standard_normal(out, dtype=np.float32),
        ]
    net.layer.add(name="prob", type="Softmax")
    write_caffemodel(path, net, blobs)


def _warm(path: Path) -> None:
    """Flush the freshly written file to disk, then read it once: every method then starts from
    the page cache, with no write-back competing for the disk."""
    with path.open("rb+", buffering=0) as handle:
        os.fsync(handle.fileno())
    buffer = bytearray(1 << 20)
    with path.open("rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass


def _child(method: str, path: str) -> None:
    """Run one method once in this (fresh) process; print time and memory as JSON."""
    import numpy as np

    from caffe_compat.io import read_caffemodel
    from caffe_compat.proto import caffe_pb2

    baseline = _maxrss_bytes()
    start = time.perf_counter()
    if method == "fromfile":
        data = np.fromfile(path, dtype=np.uint8)
        values = data.size // 4
    elif method in ("ours", "view", "view-touch"):
        weights = read_caffemodel(path, copy=method == "ours")
        values = weights.parameter_count
        if method == "view-touch":
            sum(
                float(np.sum(a, dtype=np.float64))
                for arrays in weights.blobs.values()
                for a in arrays
            )
    elif method == "naive":
        net = caffe_pb2.NetParameter()
        net.ParseFromString(Path(path).read_bytes())
        arrays = [
            np.array(blob.data, dtype=np.float32).reshape(tuple(blob.shape.dim))
            for layer in net.layer
            for blob in layer.blobs
        ]
        values = sum(a.size for a in arrays)
    else:
        raise SystemExit(f"unknown method {method}")
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {"time": elapsed, "peak": _maxrss_bytes(), "baseline": baseline, "values": values}
        )
    )


def _run_child(method: str, path: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", method, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _measure(methods: list[str], path: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Median time and largest peak RSS per method over ``repeat`` rounds of fresh subprocesses.

    Rounds go through all methods in turn, so a slow phase of the machine hits them alike.
    """
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for round_ in range(repeat):
        for method in methods:
            if method == "naive" and round_ > 0:
                continue  # slow and far off the targets: once is enough
            runs[method].append(_run_child(method, path))
    return {
        method: {
            "time": statistics.median(r["time"] for r in samples),
            "peak": max(r["peak"] for r in samples),
            "baseline": max(r["baseline"] for r in samples),
            "values": samples[0]["values"],
        }
        for method, samples in runs.items()
    }


def _report(name: str, path: Path, results: dict[str, dict[str, float]]) -> bool:
    size = path.stat().st_size
    floor = results["fromfile"]["time"]
    print(
        f"\n### {name}: {size / 1e6:.1f} MB, {results['fromfile']['values']:,} float32-sized words"
    )
    print(
        "| method | time (s) | vs np.fromfile | peak RSS (MB) | RSS / file | "
        "(RSS - baseline) / file |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for method, row in results.items():
        print(
            f"| {METHODS[method]} | {row['time']:.3f} | {row['time'] / floor:.2f}x | "
            f"{row['peak'] / 1e6:.0f} | {row['peak'] / size:.2f} | "
            f"{(row['peak'] - row['baseline']) / size:.2f} |"
        )
    ours = results["ours"]
    fast = ours["time"] <= 2 * floor
    lean = ours["peak"] < 1.5 * size or ours["peak"] - ours["baseline"] < 1.5 * size
    print(
        f"\ntargets: time within 2x of np.fromfile: {'PASS' if fast else 'FAIL'} "
        f"({ours['time'] / floor:.2f}x); peak RSS under 1.5x file size: "
        f"{'PASS' if lean else 'FAIL'} ({ours['peak'] / size:.2f}x, "
        f"{(ours['peak'] - ours['baseline']) / size:.2f}x above the "
        f"{ours['baseline'] / 1e6:.0f} MB interpreter baseline)"
    )
    return fast and lean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", type=Path, help="where to write the models (default: a temp dir)"
    )
    parser.add_argument("--models", default="vgg16,levi", help="comma-separated: vgg16, levi")
    parser.add_argument("--repeat", type=int, default=5, help="subprocess runs per method")
    parser.add_argument("--skip-naive", action="store_true", help="skip naive protobuf (slow)")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, metavar=("MODEL", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    if args.write:
        _, convs, fcs = MODELS[args.write[0]]
        _write_model(Path(args.write[1]), args.write[0], convs, fcs)
        return 0
    models = MODELS
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(chosen) - set(models)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {sys.platform}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        passed = True
        for key in chosen:
            title = models[key][0]
            path = Path(tmp) / f"{key}.caffemodel"
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--write", key, str(path)], check=True)
            print(
                f"\nwrote {path} ({path.stat().st_size / 1e6:.1f} MB) in "
                f"{time.perf_counter() - started:.1f} s"
            )
            _warm(path)
            methods = [m for m in METHODS if not (m == "naive" and args.skip_naive)]
            results = _measure(methods, path, args.repeat)
            passed = _report(title, path, results) and passed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
