"""Photos per second end to end: single-process ``predict`` against ``--engine ray`` with 1..N
local workers, on a synthetic folder of faces, all measured in this one run on this machine.

    python benchmarks/bench_scale.py [--photos 40] [--max-workers N] [--crop oversample]

Each case runs in a fresh subprocess pinned (``sched_setaffinity``) to the cores it may use, so
"N workers" means N cores: single-process predict on all N (its nets and OpenCV use every core),
the Ray engine with W workers of one thread each on W cores (local mode as ``caffe-compat
predict SOURCE --engine ray`` starts it: W actors and W slots for the decode/detect tasks, all on
the W cores). Columns: ``start`` Ray start plus a warm-up run (model loading for single),
``fixed`` a run of one photo per worker (actor start, model loading, one photo's latency),
``run`` the whole folder; ``e2e`` = photos / (start + run); ``steady`` = extra photos / extra
time from the one-photo run to the whole folder, the rate a long run settles at; ``CPU`` = CPU
seconds per photo of every process involved (Ray's raylet, GCS, workers and driver included),
which unlike wall time does not depend on what else the machine runs. Goals (steady rates): N
workers >= 0.85 x N x one worker, and >= single-process predict on the same N cores.

The parts tables measure, in CPU time on one thread, what a photo costs the CPU task, the actor
and the driver, and what Ray Data costs per block with no work in it; the many-worker argument
printed at the end is built from those numbers. Nets: the zoo's Levi-Hassner definitions with
synthesized weights, exported to ONNX.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PARTS_PHOTOS = 16

# --------------------------------------------------------------------------------------------
# Inputs


def make_models(folder: Path) -> dict[str, str]:
    from caffe_compat.converters.onnx.export import save_onnx, to_onnx
    from caffe_compat.io.writer import definitions_only, write_caffemodel
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize
    from caffe_compat.zoo import load_card

    paths = {}
    for seed, task in ((11, "age"), (12, "gender")):
        prototxt = str(load_card(f"levi_hassner_{task}").prototxt_path())
        loaded = load_net(prototxt)
        weights = folder / f"{task}.caffemodel"
        write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, seed=seed))
        paths[task] = str(folder / f"{task}.onnx")
        save_onnx(to_onnx(load_net(prototxt, weights).graph), paths[task])
    return paths


def make_photos(folder: Path, count: int) -> None:
    """Portraits of 360..720 pixels made from scikit-image's astronaut (flipped, brightened,
    some with two faces), and one photo in ten without a face (coffee)."""
    import cv2
    from skimage import data

    face = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    other = np.ascontiguousarray(data.coffee()[:, :, ::-1])
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        side = int(rng.integers(360, 721))
        if i % 10 == 9:
            photo = cv2.resize(other, (side, side * 2 // 3))
        else:
            photo = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
            photo = photo[:, ::-1] if i % 2 else photo
            gain = float(rng.uniform(0.8, 1.2))
            photo = np.clip(photo.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            if i % 5 == 4:
                photo = np.concatenate([photo, photo[:, ::-1]], axis=1)
        cv2.imwrite(str(folder / f"photo_{i:04d}.jpg"), np.ascontiguousarray(photo))


# --------------------------------------------------------------------------------------------
# Children (one case each, pinned to their cores)


def _tree_times(root: int) -> dict[int, float]:
    """utime + stime (seconds) of ``root`` and every descendant alive now."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
        times[int(name)] = (int(fields[11]) + int(fields[12])) / tick
    found, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in times:
            found[pid] = times[pid]
        stack += children.get(pid, [])
    return found


class CpuMeter:
    """CPU seconds used by this process and all its descendants (Ray's raylet, GCS and workers)
    while active, sampled every 0.1 s so that processes which end in between (actors at the end
    of a run) still count. On a machine shared with other work, wall-clock rates depend on how
    many threads compete for the cores; CPU seconds per photo do not."""

    def __init__(self) -> None:
        import threading

        self.root = os.getpid()
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid, value in _tree_times(self.root).items():
            self.first.setdefault(pid, 0.0)  # started while measuring: all of it counts
            self.last[pid] = value

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self._sample()

    def __enter__(self) -> CpuMeter:
        for pid, value in _tree_times(self.root).items():  # baseline: what ran before
            self.first[pid] = self.last[pid] = value
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def child_single(folder: str, models: dict[str, str], crop: str) -> dict:
    from caffe_compat.app.images import read_image
    from caffe_compat.app.predictor import Predictor
    from caffe_compat.app.scale_sources import list_source

    start = time.perf_counter()
    predictor = Predictor(age_model=models["age"], gender_model=models["gender"], crop=crop)
    loaded = time.perf_counter()
    cpu = time.process_time()
    paths = list_source(folder)
    faces = 0
    for _, found in predictor.predict_many((p, read_image(p)) for p in paths):
        faces += len(found)
    end = time.perf_counter()
    return {
        "photos": len(paths),
        "faces": faces,
        "start": loaded - start,
        "wall": end - loaded,
        "e2e": len(paths) / (end - start),
        "steady": len(paths) / (end - loaded),
        "cpu": (time.process_time() - cpu) / len(paths),
    }


def child_ray(spec: dict) -> dict:
    """Ray started as ``--engine ray`` starts it locally, then three runs: a warm-up (the first
    run of a session also starts Ray's worker processes), one photo per worker (the fixed costs
    of a run: actor start, model loading, one photo's latency, the final pass over DIR) and the
    whole folder; the steady rate is the slope between the last two."""
    import ray

    from caffe_compat.app import scale
    from caffe_compat.app.images import MAX_PIXELS
    from caffe_compat.app.scale_session import RayOptions, session

    workers = len(spec["cores"])
    options = {
        "workers": workers,
        "threads": 1,
        "block": spec["block"],
        "crop": spec["crop"],
        "age_model": spec["models"]["age"],
        "gender_model": spec["models"]["gender"],
    }
    start = time.perf_counter()
    with session(ray, RayOptions(workers=workers), 1, MAX_PIXELS):
        scale.predict_dataset(spec["tiny"], spec["out"] + "_warm", **options)
        started = time.perf_counter()
        with CpuMeter() as fixed_cpu:
            tiny = scale.predict_dataset(spec["tiny"], spec["out"] + "_tiny", **options)
        middle = time.perf_counter()
        driver = time.process_time()  # the driver process: Ray Data's executor runs here
        with CpuMeter() as full_cpu:
            full = scale.predict_dataset(spec["folder"], spec["out"], **options)
        driver = time.process_time() - driver
        end = time.perf_counter()
    return {
        "photos": full.processed,
        "faces": full.faces,
        "workers": full.workers,
        "start": started - start,  # Ray start and the warm-up run
        "fixed": middle - started,
        "wall": end - middle,
        "e2e": full.processed / (started - start + end - middle),
        "steady": (full.processed - tiny.processed) / ((end - middle) - (middle - started)),
        "cpu": (full_cpu.seconds - fixed_cpu.seconds) / (full.processed - tiny.processed),
        "driver_share": driver / (end - middle),
    }


def median_run(found: list[dict]) -> dict:
    """The run with the median steady rate (all of its numbers, so they stay consistent)."""
    return sorted(found, key=lambda r: r["steady"])[len(found) // 2]


def run_child(kind: str, cores: list[int], extra: dict) -> dict:
    spec = {"kind": kind, "cores": cores, **extra}
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} on {cores} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(spec: dict) -> None:
    os.sched_setaffinity(0, spec["cores"])
    if spec["kind"] == "single":
        result = child_single(spec["folder"], spec["models"], spec["crop"])
    else:
        result = child_ray(spec)
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------
# Parts, on one thread in this process: CPU time (time.process_time), which a busy machine
# does not inflate the way it inflates wall time


def parts(folder: Path, models: dict[str, str], crop: str, block: int) -> dict[str, float]:
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    from caffe_compat.app.images import MAX_FILE_BYTES as MAX_BYTES
    from caffe_compat.app.images import MAX_PIXELS
    from caffe_compat.app.predictor import Predictor
    from caffe_compat.app.scale_output import commit_shard
    from caffe_compat.app.scale_sources import list_source
    from caffe_compat.app.scale_stages import (
        AgeGenderWorker,
        NetGroup,
        find_faces,
        geometry_of,
        read_bytes,
    )
    from caffe_compat.app.settings import AppSettings

    options = {"age_model": models["age"], "gender_model": models["gender"], "crop": crop}
    settings = AppSettings(**options, threads=1, max_pixels=MAX_PIXELS, max_bytes=MAX_BYTES)
    predictor = Predictor(settings)
    settings = predictor.settings
    geometry = geometry_of(predictor, "age")
    paths = list_source(folder)[:PARTS_PHOTOS]
    table = pa.table({"path": pa.array(paths)})
    cv2.setNumThreads(1)
    start = time.process_time()
    shipped = find_faces(read_bytes(table, MAX_BYTES), settings, (geometry,))
    cpu_task = (time.process_time() - start) / len(paths)
    scratch = Path(tempfile.mkdtemp(prefix="bench_scale_parts_"))
    group = NetGroup(("age", "gender"), 0)
    names = {"age": "age", "gender": "gender"}
    worker = AgeGenderWorker(str(scratch), settings, [group], [geometry], names, False)
    worker(shipped.slice(0, 2))  # warm-up
    start = time.process_time()
    worker(shipped)
    actor = (time.process_time() - start) / len(paths)
    rows = pa.concat_tables([pq.read_table(p) for p in scratch.glob("part-*")])
    piece = rows.slice(0, min(len(rows), block))
    start = time.perf_counter()  # wall: the fsyncs wait for the disk
    for _ in range(20):
        commit_shard(scratch, piece)
    commit = (time.perf_counter() - start) / 20 / block
    shutil.rmtree(scratch)
    # The driver: list, subtract what is done, cut into blocks, for 200k paths.
    many = [f"/data/photos/{i // 1000:04d}/{i:08d}.jpg" for i in range(200_000)]
    done = set(many[::3])
    start = time.process_time()
    todo = [p for p in many if p not in done]
    blocks = [pa.table({"path": pa.array(todo[i : i + 64])}) for i in range(0, len(todo), 64)]
    driver_filter = (time.process_time() - start) / len(many)
    start = time.perf_counter()
    walked = len(list_source(folder))
    walk = (time.perf_counter() - start) / walked
    del blocks
    return {
        "cpu_task": cpu_task,
        "actor": actor,
        "commit": commit,
        "driver_filter": driver_filter,
        "walk": walk,
        "shipped_bytes": shipped.nbytes / len(paths),
    }


class _Counts:
    """A stand-in for the inference actor: one row of counts per call, no work."""

    def __call__(self, batch):
        import pyarrow as pa

        return pa.table({"photos": [batch.num_rows]})


def ray_parts(count: int = 200_000) -> dict[str, float]:
    """Ray's own costs on this machine: putting a listing into the object store (per path, in
    the engine's blocks), and carrying a block through the engine's stages (task -> actor ->
    the driver's iterator) with no work in them: wall time, driver CPU and all processes' CPU
    per block, from the slope between 40 and 440 blocks (actor start cancels out)."""
    import pyarrow as pa
    import ray

    from caffe_compat.app.scale import LISTING_BLOCK as block

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        paths = [f"/data/photos/{i:08d}.jpg" for i in range(count)]
        tables = [
            pa.table({"path": pa.array(paths[i : i + block])}) for i in range(0, count, block)
        ]
        start = time.process_time()
        ray.data.from_arrow(tables)
        result = {"from_arrow": (time.process_time() - start) / count}
        ray.data.DataContext.get_current().enable_progress_bars = False
        samples = []
        for blocks in (40, 440):
            source = ray.data.from_arrow([pa.table({"path": ["x"]}) for _ in range(blocks)])
            wall, driver = time.perf_counter(), time.process_time()
            with CpuMeter() as cpu:
                pipeline = source.map_batches(lambda b: b, batch_size=1, batch_format="pyarrow")
                pipeline = pipeline.map_batches(
                    _Counts,
                    batch_size=1,
                    batch_format="pyarrow",
                    compute=ray.data.ActorPoolStrategy(size=1),
                )
                for _ in pipeline.iter_batches(batch_size=None):
                    pass
            samples.append(
                (blocks, time.perf_counter() - wall, cpu.seconds, time.process_time() - driver)
            )
        (b0, w0, c0, d0), (b1, w1, c1, d1) = samples
        result.update(
            block_wall=(w1 - w0) / (b1 - b0),
            block_cpu=(c1 - c0) / (b1 - b0),
            block_driver=(d1 - d0) / (b1 - b0),
        )
        return result
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------------------------


def bench_precisions(models_dir: Path, batch: int = 1024, seconds: float = 3.0) -> None:
    """Net images/s of the Levi-Hassner age net per numeric mode on CUDA, each with its max abs
    error on prob against ONNX Runtime on the CPU (the same weights and inputs), in one run."""
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print("\nnumeric modes: no CUDA device here (the per-precision table needs one)")
        return
    from caffe_compat.converters.onnx.runtime import run_all, session
    from caffe_compat.converters.torch.model import to_torch
    from caffe_compat.ir.load import load_net
    from caffe_compat.zoo import load_card

    prototxt = str(load_card("levi_hassner_age").prototxt_path())
    loaded = load_net(prototxt, models_dir / "age.caffemodel")
    rng = np.random.default_rng(0)
    x = rng.uniform(-120, 120, (batch, 3, 227, 227)).astype(np.float32)
    check = x[:64]
    onnx_path = models_dir / "age.onnx"
    reference = run_all(session(str(onnx_path)), {"data": check})["prob"]
    print(f"\nLevi-Hassner age net on {torch.cuda.get_device_name()}, batch {batch}:")
    print(f"{'mode':<8}{'images/s':>12}{'vs exact':>10}{'max abs error on prob':>24}")
    rates = {}
    for mode in ("exact", "fp32", "tf32", "fp16"):
        model = to_torch(loaded.graph, precision=mode).cuda()
        data = torch.from_numpy(x).cuda()
        with torch.no_grad():
            model(data[:8])
            torch.cuda.synchronize()
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                model(data)
                done += batch
            torch.cuda.synchronize()
            rate = done / (time.perf_counter() - start)
            prob = model(torch.from_numpy(check).cuda()).float().cpu().numpy()
        rates[mode] = rate
        error = float(np.abs(prob.reshape(reference.shape) - reference).max())
        print(f"{mode:<8}{rate:>12,.0f}{rate / rates['exact']:>9.2f}x{error:>24.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--max-workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--crop", default="oversample", choices=("oversample", "center", "opencv"))
    parser.add_argument("--block", type=int, default=4, help="photos per shard (default: 4)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median)")
    parser.add_argument("--workdir", type=Path, help="keep inputs here (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--precisions-only", action="store_true", help="only the CUDA numeric-mode table"
    )
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return

    cores = sorted(os.sched_getaffinity(0))[: args.max_workers]
    n = len(cores)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    models_dir, folder = work / "models", work / "photos"
    if not models_dir.exists():
        models_dir.mkdir()
        make_models(models_dir)
    models = {t: str(models_dir / f"{t}.onnx") for t in ("age", "gender")}
    if args.precisions_only:
        bench_precisions(models_dir)
        return
    if not folder.exists():
        make_photos(folder, args.photos)
    tiny = work / "tiny.txt"  # one photo per worker: the fixed costs of a run
    tiny.write_text("".join(f"{p}\n" for p in sorted(folder.iterdir())[:n]))
    common = {"folder": str(folder), "models": models, "crop": args.crop}
    print(f"{args.photos} photos, crop {args.crop}, {n} core(s) {cores}; inputs in {work}")

    cases = [("single", cores, common)]
    for workers in range(1, n + 1):
        out = str(work / f"out_{workers}")
        extra = {**common, "out": out, "block": args.block, "tiny": str(tiny)}
        cases.append((f"ray{workers}", cores[:workers], extra))
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in cases}
    for _ in range(args.repeat):  # round robin, so a busy spell on a shared machine hits all
        for name, pinned, extra in cases:
            if "out" in extra:  # every Ray run starts from an empty output folder
                shutil.rmtree(extra["out"], ignore_errors=True)
                for suffix in ("_tiny", "_warm"):
                    shutil.rmtree(extra["out"] + suffix, ignore_errors=True)
            runs[name].append(run_child("single" if name == "single" else "ray", pinned, extra))
    results = {name: median_run(found) for name, found in runs.items()}

    single = results["single"]["steady"]
    one = results["ray1"]["steady"]
    print()
    head = f"{'engine':<30}{'cores':>6}{'start s':>9}{'fixed s':>9}{'run s':>8}{'e2e ph/s':>10}"
    print(head + f"{'steady ph/s':>13}{'CPU ms/ph':>11}{'vs single':>11}{'vs 1 worker':>13}")
    rows = [("single-process predict", n, results["single"])]
    rows += [(f"ray, {w} worker(s) x 1 thread", w, results[f"ray{w}"]) for w in range(1, n + 1)]
    for name, count, r in rows:
        ratio = f"{r['steady'] / one:.2f}x" if name.startswith("ray") else "-"
        fixed = f"{r['fixed']:.1f}" if "fixed" in r else "-"
        print(
            f"{name:<30}{count:>6}{r['start']:>9.1f}{fixed:>9}{r['wall']:>8.1f}{r['e2e']:>10.2f}"
            f"{r['steady']:>13.2f}{1e3 * r['cpu']:>11.0f}{r['steady'] / single:>10.2f}x{ratio:>13}"
        )
    print(
        "start: Ray start and a warm-up run (ray), model loading (single); fixed: a run of one "
        "photo per worker (actor start, model loading, one photo's latency); run: the whole "
        "folder.\ne2e = photos / (start + run), pessimistic for ray (two runs' fixed costs); "
        "steady = extra photos / extra time from the one-photo run to the whole folder; CPU: "
        "all processes' CPU seconds per extra photo (Ray's included)."
    )
    top = results[f"ray{n}"]["steady"]
    print()
    for goal, got, wanted in (
        (f"{n} workers >= 0.85 x {n} x one worker", top, 0.85 * n * one),
        (f"{n} workers >= single-process on {n} cores", top, single),
    ):
        print(f"goal: {goal}: {got:.2f} vs {wanted:.2f} -> {'met' if got >= wanted else 'MISSED'}")
    cpu_one, cpu_top = results["ray1"]["cpu"], results[f"ray{n}"]["cpu"]
    print(
        f"CPU per photo, {n} workers against one: {1e3 * cpu_top:.0f} vs {1e3 * cpu_one:.0f} ms "
        f"({cpu_one / cpu_top:.2f}: 1.00 means no extra work per photo with more workers)"
    )
    print(
        f"driver process during the {n}-worker run: {results[f'ray{n}']['driver_share']:.0%} of "
        "a core (Ray Data's executor)"
    )
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} (a shared machine makes wall rates noisy)")

    p = parts(folder, models, args.crop, args.block)
    p.update(ray_parts())
    worker_s = p["cpu_task"] + p["actor"] + p["commit"]
    setup_s = p["walk"] + p["driver_filter"] + p["from_arrow"]
    print()
    print(f"parts, per photo (one thread; the first {PARTS_PHOTOS} photos)")
    print(f"  CPU task: read, decode, detect, cut, shrink  {1e3 * p['cpu_task']:9.1f} ms")
    print(f"  actor: both nets, {args.crop:<26}{1e3 * p['actor']:9.1f} ms")
    print(f"  actor: shard commit (block of {args.block:<3})     {1e3 * p['commit']:9.1f} ms")
    print(f"  shipped from task to actor                  {p['shipped_bytes'] / 1024:9.0f} KiB")
    print(f"  driver, once: walk the folder               {1e6 * p['walk']:9.1f} us")
    print(f"  driver, once: subtract done paths           {1e6 * p['driver_filter']:9.1f} us")
    print(f"  driver, once: listing into Ray's store      {1e6 * p['from_arrow']:9.1f} us")
    print("Ray Data, per block through task -> actor -> driver, nothing in them")
    print(f"  wall (one actor)                            {1e3 * p['block_wall']:9.2f} ms")
    print(f"  CPU, all processes                          {1e3 * p['block_cpu']:9.2f} ms")
    print(f"  CPU, the driver                             {1e3 * p['block_driver']:9.2f} ms")
    per_worker = 1 / worker_s
    block_share = p["block_cpu"] / args.block
    background = cpu_one - worker_s - block_share
    driver_rate = args.block / p["block_driver"]
    driver_rate_64 = 64 / p["block_driver"]
    print()
    print(
        f"One worker's parts add up to {1e3 * worker_s:.0f} ms of CPU a photo ({per_worker:.2f} "
        f"photos/s on a core of its own). The Ray engine with one worker used {1e3 * cpu_one:.0f}"
        f" ms a photo in all its processes: {1e3 * block_share:.1f} ms of it is carrying blocks "
        f"({1e3 * p['block_cpu']:.1f} ms a block of {args.block}), {1e3 * background:.0f} ms "
        "Ray's background (raylet, GCS, the driver's executor loop): a cost per second, not per "
        f"photo, that all workers share. With {n} workers: {1e3 * cpu_top:.0f} ms a photo. The "
        "work per photo does not grow with the number of workers and the workers never wait on "
        "one another, so N workers on N cores give N times one worker."
    )
    print(
        "Nothing per photo passes through the driver: it lists paths once "
        f"({1e6 * setup_s:.0f} us a photo) and then handles blocks, "
        f"{1e3 * p['block_driver']:.1f} ms of its CPU each (Ray Data's executor runs in the "
        f"driver): one driver core keeps up with {driver_rate:,.0f} photos/s at blocks of "
        f"{args.block}, {driver_rate_64:,.0f} at the default 64, i.e. "
        f"{math.floor(driver_rate_64 / per_worker):,} CPU workers like these. The faces shipped "
        f"to the actors are {p['shipped_bytes'] / 1024:.0f} KiB a photo of object store traffic, "
        f"{per_worker * p['shipped_bytes'] / 2**20:.1f} MiB/s a worker."
    )
    bench_precisions(models_dir)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "parts": p}, indent=1))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
