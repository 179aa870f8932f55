"""``caffe-compat predict SOURCE --engine ray --output DIR``: the Ray Data engine's options and
run (``caffe_compat.app.scale``). The single-process engine stays the default."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..errors import CaffeCompatError
from ..printable import printable

ENGINES = ("single", "ray")
_RAY_ONLY = ("output", "address", "workers", "threads", "block")
_ERRORS_SHOWN = 10


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    from ..app.images import MAX_PIXELS
    from ..app.scale_session import DEFAULT_BLOCK

    group = parser.add_argument_group(
        "many photos",
        "--engine ray: one SOURCE (a folder, a text file of paths or a Parquet file with a 'path' "
        "column) into Parquet shards in --output DIR; run it again with the same DIR to resume. "
        "Workers run on GPUs where the Ray cluster has them, unless --device cpu",
    )
    group.add_argument(
        "--engine",
        choices=ENGINES,
        default="single",
        help="single: this process, text output (default); ray: Ray Data, Parquet output",
    )
    group.add_argument("--output", metavar="DIR", help="folder of the Parquet results (ray)")
    group.add_argument(
        "--address", help="join this Ray cluster (default: start Ray on this machine)"
    )
    group.add_argument(
        "--workers",
        type=int,
        help="inference workers (default: one per GPU; else one per CPU here, or half the "
        "CPUs of a cluster)",
    )
    group.add_argument("--threads", type=int, help="threads per CPU worker (default: 1)")
    group.add_argument(
        "--block", type=int, help=f"photos per inference call and shard (default: {DEFAULT_BLOCK})"
    )
    group.add_argument(
        "--max-pixels",
        type=int,
        help=f"refuse larger images: decompression bombs (default: {MAX_PIXELS}; both engines)",
    )


def reject_scale_options(args: argparse.Namespace) -> None:
    """The single-process engine: the Ray options would be silently ignored, so refuse them."""
    given = [name for name in _RAY_ONLY if getattr(args, name, None) is not None]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise CaffeCompatError(f"{options} go(es) with --engine ray")


def _device(value: str | None) -> str:
    if value is None:
        return "auto"
    if value == "cpu" or value.startswith("cuda"):
        return "cpu" if value == "cpu" else "cuda"
    raise CaffeCompatError(f"--engine ray runs on cpu or cuda, not --device {value}")


def run_scaled(args: argparse.Namespace) -> int:
    from ..app.scale import predict_dataset
    from ..app.scale_session import DEFAULT_BLOCK, RayOptions, require_ray
    from ..progress import Progress
    from ._models import predict_settings

    if len(args.photos) != 1:
        raise CaffeCompatError(
            f"--engine ray takes one SOURCE (a folder or a manifest), got {len(args.photos)}"
        )
    if not args.output:
        raise CaffeCompatError("--engine ray needs --output DIR (the Parquet results)")
    if args.annotate or args.json:
        raise CaffeCompatError(
            "--annotate and --json go with the single engine; --engine ray writes Parquet"
        )
    settings = predict_settings(args)
    if settings.check_precision:
        raise CaffeCompatError("--check-precision runs with the single-process engine only")
    options = RayOptions(
        args.address, args.workers, _device(args.device), args.block or DEFAULT_BLOCK
    )
    require_ray()  # after the usage checks, so a wrong command line is said first
    bar = Progress(None, label="predict", unit="photos")  # the total comes with the first update
    try:
        summary = predict_dataset(
            args.photos[0],
            args.output,
            settings,
            threads=args.threads or 1,
            on_progress=bar.set,
            **dataclasses.asdict(options),
        )
    finally:
        bar.close()
    err = sys.stderr
    for path, reason in summary.error_sample:
        print(f"caffe-compat: unreadable {printable(path)}: {printable(reason)}", file=err)
    if summary.errors > len(summary.error_sample):
        more = summary.errors - len(summary.error_sample)
        print(f"caffe-compat: ... and {more} more unreadable (the error column)", file=err)
    where = f"{summary.workers} worker(s){' on GPUs' if summary.gpu else ''}, "
    print(
        f"{summary.photos} photo(s), {summary.faces} face(s), {summary.no_face} without a face, "
        f"{summary.errors} unreadable, in {summary.output}; this run: {summary.processed} "
        f"processed, {summary.already_done} already done "
        f"({where if summary.processed else ''}{summary.seconds:.1f} s)"
    )
    if summary.readable == 0:
        what = "no photo could be read" if summary.photos else "no photos in the source"
        print(f"caffe-compat: error: {what}", file=err)
        return 2
    return 0
