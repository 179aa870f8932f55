"""Training speed and memory: the Levi-Hassner age train net at batch 50 on the CPU.

    python benchmarks/bench_train.py [--iterations 5] [--batch 50] [--threads N]
                                     [--caffe-bin PATH] [--prototxt train_val.prototxt]

Rows (each in its own subprocess, so peak RSS is its own):

- ``ours: forward+backward``: ``TrainNet.forward_backward`` on a fixed batch (the Data layers
  replaced by feeds), the work ``caffe time`` measures.
- ``ours: solver iteration``: a whole ``Solver`` iteration: the next batch from an ImageData list
  (photos decoded, resized, cropped, mirrored and mean-subtracted in worker processes), forward,
  backward and Caffe's SGD update with momentum and weight decay.
- ``caffe time``: real Caffe's ``caffe time -model NET -iterations N`` on the same net with
  DummyData, measured in the same run when a Caffe build is found (``--caffe-bin``, ``$CAFFE_BIN``
  or /work/caffe/.build_release/tools/caffe.bin); otherwise the stated anchor (about 6.7 s per
  batch-50 forward+backward on this machine kind, REAL_CAFFE.md).

Columns: seconds per batch (median), images/s, peak RSS. The check at the end (exit code 1 if it
fails): ours no slower per batch than Caffe, and the training footprint under 4 GiB. Timings on
a shared machine vary run to run; compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANCHOR_SECONDS = 6.7
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "levi_hassner"
CAFFE_DEFAULT = Path("/work/caffe/.build_release/tools/caffe.bin")
GIB = 2**30


def dummy_net(prototxt: Path, batch: int) -> str:
    """The train_val net with its Data layers replaced by DummyData (as REAL_CAFFE.md times it)."""
    from caffe_compat.io import load_prototxt
    from caffe_compat.io.upgrade import upgrade_net
    from caffe_compat.io.writer import net_to_text
    from caffe_compat.proto import caffe_pb2

    net, _ = load_prototxt(prototxt)
    upgrade_net(net)
    layers = []
    for layer in net.layer:
        if layer.type == "Data":
            if any(rule.phase == caffe_pb2.TEST for rule in layer.include):
                continue
            crop = layer.transform_param.crop_size or 227
            dummy = caffe_pb2.LayerParameter(name=layer.name, type="DummyData")
            dummy.top.extend(layer.top)
            p = dummy.dummy_data_param
            p.shape.add().dim.extend([batch, 3, crop, crop])
            p.shape.add().dim.extend([batch])
            p.data_filler.add(type="gaussian", std=50)
            p.data_filler.add(type="constant", value=3)
            layers.append(dummy)
        elif any(rule.phase == caffe_pb2.TEST for rule in layer.include):
            continue
        else:
            layers.append(layer)
    del net.layer[:]
    net.layer.extend(layers)
    return net_to_text(net)


def child_forward_backward(args: argparse.Namespace) -> dict:
    import resource

    import numpy as np
    import torch

    from caffe_compat.io import load_prototxt
    from caffe_compat.train.net import TrainNet

    torch.set_num_threads(args.threads)
    net_param, _ = load_prototxt(args.net)
    net = TrainNet(net_param, phase="TRAIN")
    rng = np.random.default_rng(0)
    feeds = {
        name: torch.from_numpy(
            rng.normal(0, 50, (args.batch, 3, 227, 227)).astype(np.float32)
            if index == 0
            else rng.integers(0, 8, args.batch).astype(np.float32)
        )
        for index, name in enumerate(net.input_names)
    }
    net.forward_backward(feeds or None)  # warm-up
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        net.forward_backward(feeds or None)
        times.append(time.perf_counter() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": float(np.median(times)), "rss": rss}


def child_solver(args: argparse.Namespace) -> dict:
    import resource

    import cv2
    import numpy as np
    import torch

    from caffe_compat.io import load_prototxt
    from caffe_compat.io.upgrade import upgrade_net
    from caffe_compat.io.writer import net_to_text
    from caffe_compat.proto import caffe_pb2
    from caffe_compat.train.solver import Solver

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    rng = np.random.default_rng(1)
    lines = []
    for index in range(2 * args.batch):
        photo = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        cv2.imwrite(str(work / f"{index}.jpg"), photo)
        lines.append(f"{index}.jpg {index % 8}")
    (work / "list.txt").write_text("\n".join(lines) + "\n")
    net, _ = load_prototxt(args.prototxt)
    upgrade_net(net)
    keep = []
    for layer in net.layer:
        if any(rule.phase == caffe_pb2.TEST for rule in layer.include):
            continue
        if layer.type == "Data":
            image = caffe_pb2.LayerParameter(name=layer.name, type="ImageData")
            image.top.extend(layer.top)
            image.include.add(phase=caffe_pb2.TRAIN)
            p = image.image_data_param
            p.source, p.root_folder = str(work / "list.txt"), f"{work}/"
            p.batch_size, p.new_height, p.new_width = args.batch, 256, 256
            image.transform_param.crop_size = 227
            image.transform_param.mirror = True
            image.transform_param.mean_value.extend([78.4, 87.8, 114.9])
            layer = image
        keep.append(layer)
    del net.layer[:]
    net.layer.extend(keep)
    (work / "net.prototxt").write_text(net_to_text(net))
    solver = caffe_pb2.SolverParameter(
        net=str(work / "net.prototxt"),
        base_lr=0.001,
        lr_policy="step",
        gamma=0.1,
        stepsize=10000,
        momentum=0.9,
        weight_decay=0.0005,
        max_iter=1000,
        random_seed=1,
        solver_mode=caffe_pb2.SolverParameter.CPU,
    )
    engine = Solver(solver, device="cpu")
    engine.step(1)  # warm-up (workers start)
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        engine.step(1)
        times.append(time.perf_counter() - start)
    engine.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": float(np.median(times)), "rss": rss}


def caffe_time(caffe_bin: Path, net: Path, iterations: int) -> dict | None:
    env = {**os.environ, "GLOG_logtostderr": "1", "GLOG_minloglevel": "0"}
    command = [str(caffe_bin), "time", "-model", str(net), "-iterations", str(iterations)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Average Forward-Backward: ([\d.]+) ms", result.stderr)
    if not found:
        print(result.stderr[-2000:], file=sys.stderr)
        return None
    rss = None
    return {"seconds": float(found.group(1)) / 1000, "rss": rss}


def run_child(kind: str, args: argparse.Namespace, net: Path, workdir: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--net",
        str(net),
        "--workdir",
        str(workdir),
        "--iterations",
        str(args.iterations),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
        "--prototxt",
        str(args.prototxt),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"the {kind} run failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--caffe-bin", default=os.environ.get("CAFFE_BIN"))
    parser.add_argument("--prototxt", default=str(SHARED / "train_val_age_fold0.prototxt"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = (child_forward_backward if args.child == "fb" else child_solver)(args)
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        net = work / "train_dummy.prototxt"
        net.write_text(dummy_net(Path(args.prototxt), args.batch))
        rows = {
            "ours: forward+backward": run_child("fb", args, net, work),
            "ours: solver iteration": run_child("solver", args, net, work),
        }
        caffe_bin = Path(args.caffe_bin) if args.caffe_bin else CAFFE_DEFAULT
        measured = caffe_time(caffe_bin, net, args.iterations) if caffe_bin.exists() else None
    if measured:
        rows["caffe time (measured now)"] = measured
        caffe_seconds = measured["seconds"]
    else:
        caffe_seconds = ANCHOR_SECONDS
        rows["caffe time (stated anchor)"] = {"seconds": ANCHOR_SECONDS, "rss": None}
    print(f"Levi-Hassner age train net, batch {args.batch}, {args.threads} thread(s)")
    print(f"{'row':32} {'s/batch':>9} {'images/s':>9} {'peak RSS':>10}")
    for name, row in rows.items():
        rss = f"{row['rss'] / GIB:.2f} GiB" if row.get("rss") else "-"
        print(f"{name:32} {row['seconds']:9.3f} {args.batch / row['seconds']:9.1f} {rss:>10}")
    ours = rows["ours: forward+backward"]["seconds"]
    ok = ours <= caffe_seconds and rows["ours: solver iteration"]["rss"] < 4 * GIB
    print(
        f"forward+backward {caffe_seconds / ours:.1f}x Caffe's speed; "
        f"training footprint {rows['ours: solver iteration']['rss'] / GIB:.2f} GiB (< 4 GiB): "
        + ("ok" if ok else "FAILED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
