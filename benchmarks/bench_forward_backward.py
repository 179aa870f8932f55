"""One training step's compute: forward + backward of a train net (the Levi-Hassner age net at
batch 50 by default) with the training engine on the CPU, against real Caffe's ``caffe time``
measured in the same run when a Caffe build is given.

    python benchmarks/bench_forward_backward.py [--prototxt TRAIN_VAL] [--batch 50]
        [--threads 2] [--iterations 5] [--caffe /path/to/caffe.bin] [--json out.json]

The data layer of the TRAIN phase is replaced by DummyData of the same shape (gaussian data,
labels 0), for both engines, so neither reads a database. Wall-clock timings on a shared machine
vary with its load (printed); compare the two engines within one run. CPU seconds per step (ours:
the process's; Caffe's: its children's, from two runs of different lengths so set-up cancels out)
depend far less on the load: on idle cores a step takes about CPU seconds / threads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("CAFFE_COMPAT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LEVI = SHARED / "levi_hassner" / "train_val_age_fold0.prototxt"


def dummy_net(prototxt: Path, batch: int, out: Path) -> Path:
    """The TRAIN net with its data layer replaced by DummyData (gaussian data, zero labels)."""
    from caffe_compat.io.prototxt import parse_text, read_text
    from caffe_compat.io.upgrade import upgrade_net
    from caffe_compat.io.writer import write_prototxt
    from caffe_compat.ir.phase import NetState, layer_included
    from caffe_compat.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    parse_text(read_text(prototxt), net, path=str(prototxt))
    upgrade_net(net)
    state = NetState.make("TRAIN")
    kept = [layer for layer in net.layer if layer_included(state, layer)]
    data = next(layer for layer in kept if layer.type in ("Data", "ImageData", "MemoryData"))
    crop = data.transform_param.crop_size
    dummy = caffe_pb2.LayerParameter(name=data.name, type="DummyData", top=data.top)
    p = dummy.dummy_data_param
    p.shape.add().dim.extend([batch, 3, crop, crop])
    p.shape.add().dim.extend([batch])
    p.data_filler.add(type="gaussian", std=1.0)
    p.data_filler.add(type="constant", value=0.0)
    del net.layer[:]
    net.layer.extend([dummy] + [layer for layer in kept if layer is not data])
    for layer in net.layer:
        del layer.include[:]
    write_prototxt(out, net)
    return out


def ours(prototxt: Path, iterations: int) -> dict[str, float]:
    from caffe_compat.train import TrainNet

    net = TrainNet(prototxt, keep_diffs=False, seed=0)
    net.forward_backward()  # warm-up
    steps, forwards, cpu = [], [], []
    for _ in range(iterations):
        start, cpu_start = time.perf_counter(), time.process_time()
        net.forward()
        middle = time.perf_counter()
        net.backward()
        end = time.perf_counter()
        forwards.append(middle - start)
        steps.append(end - start)
        cpu.append(time.process_time() - cpu_start)
    return {
        "forward_s": statistics.median(forwards),
        "step_s": statistics.median(steps),
        "step_cpu_s": statistics.median(cpu),
    }


def _run_caffe(binary: Path, prototxt: Path, iterations: int, threads: int) -> tuple[str, float]:
    """``caffe time``'s log and the CPU seconds it used (OpenBLAS on ``threads`` threads)."""
    env = dict(
        os.environ,
        GLOG_logtostderr="1",
        OPENBLAS_NUM_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [str(binary), "time", f"-model={prototxt}", f"-iterations={iterations}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return done.stdout + done.stderr, cpu


def caffe_time(binary: Path, prototxt: Path, iterations: int, threads: int) -> dict[str, float]:
    """``caffe time``'s average forward and forward-backward per iteration, in seconds, and its
    CPU seconds per iteration (a run of 1 iteration subtracted from one of 1 + iterations)."""
    _, short = _run_caffe(binary, prototxt, 1, threads)
    log, long = _run_caffe(binary, prototxt, 1 + iterations, threads)

    def value(name: str) -> float:
        found = re.search(rf"Average {name}: ([0-9.]+) ms", log)
        if found is None:
            raise SystemExit(f"no 'Average {name}' in caffe time's output:\n{log[-2000:]}")
        return float(found.group(1)) / 1000

    return {
        "forward_s": value("Forward pass"),
        "step_s": value("Forward-Backward"),
        "step_cpu_s": (long - short) / iterations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prototxt", type=Path, default=LEVI)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--caffe", type=Path, help="real Caffe's caffe.bin, timed in this run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        net = dummy_net(args.prototxt, args.batch, Path(tmp) / "train.prototxt")
        results = {"load_before": os.getloadavg()[0], "ours": ours(net, args.iterations)}
        if args.caffe:
            results["caffe"] = caffe_time(args.caffe, net, args.iterations, args.threads)
        results["load_after"] = os.getloadavg()[0]
    print(
        f"{args.prototxt.name}, batch {args.batch}, {args.threads} thread(s), "
        f"load {results['load_before']:.1f} -> {results['load_after']:.1f}"
    )
    for engine in ("ours", "caffe"):
        if engine in results:
            r = results[engine]
            print(
                f"  {engine:5s}: forward {r['forward_s']:.2f} s, forward+backward "
                f"{r['step_s']:.2f} s ({args.batch / r['step_s']:.1f} images/s), "
                f"{r['step_cpu_s']:.2f} CPU s per step"
            )
    if "caffe" in results:
        ours_r, caffe_r = results["ours"], results["caffe"]
        print(
            f"  Caffe / ours: {caffe_r['step_s'] / ours_r['step_s']:.2f}x wall, "
            f"{caffe_r['step_cpu_s'] / ours_r['step_cpu_s']:.2f}x CPU"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
