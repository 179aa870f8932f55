"""Run the same inputs through our PyTorch model on CPU (and CUDA when present) and our ONNX
model in ONNX Runtime (CPU, and CUDA when present), and compare every shared blob with the
independent judges: the float64 reference (caffe_compat.reference: Caffe's formulas in numpy,
always available, the only judge on OpenCV 5), OpenCV 4's Caffe reader on the very same files
(when OpenCV 4 is installed) and stored reference arrays (--reference, e.g. recorded from real
Caffe). Exit code 1 on a failure. --report also writes the comparison as one self-contained
page of pictures: plots of error over tolerance per blob, the net drawn coloured by error."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..errors import CaffeCompatError
from ..printable import printable
from ..verify import Report, Tolerance, verify
from ._common import add_memory_argument, add_net_arguments, net_options

NAME = "verify"
HELP = "compare every blob against the float64 reference, OpenCV 4 and stored arrays"
ORDER = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prototxt", help="net definition (.prototxt, V1 or V2)")
    parser.add_argument("weights", help="weights (.caffemodel V1/V2, or HDF5)")
    parser.add_argument("--onnx", metavar="FILE", help="check this exported ONNX file's outputs")
    parser.add_argument(
        "--reference", metavar="REF.npz", help="stored arrays by blob name (inputs optional)"
    )
    parser.add_argument(
        "--input",
        action="append",
        metavar="FILE",
        help="a .npy batch (N,C,H,W, preprocessed) or an image file (repeatable)",
    )
    parser.add_argument("--mean", metavar="FILE|B,G,R", help="mean for --input images / synthetic")
    parser.add_argument("--batch", type=int, default=20, help="synthetic inputs (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    parser.add_argument("--rtol", type=float, default=Tolerance.rtol, help="relative tolerance")
    parser.add_argument("--atol", type=float, default=Tolerance.atol, help="absolute tolerance")
    parser.add_argument(
        "--against",
        default="auto",
        metavar="JUDGES",
        help="independent judges, comma-separated: float64 (caffe_compat.reference, numpy "
        "float64, always available), opencv (OpenCV 4's Caffe reader on the same files); "
        "default auto: every judge that can run here (stored arrays from --reference always "
        "count); a judge named here that cannot run is an error",
    )
    parser.add_argument("--no-opencv", action="store_true", help="leave OpenCV out (auto mode)")
    parser.add_argument(
        "--precision",
        choices=("exact", "fp32", "tf32", "fp16"),
        default="exact",
        help="numeric mode of PyTorch on CUDA to judge (default exact); the report shows whether "
        "parity holds in that mode",
    )
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even when present")
    parser.add_argument("--failures-only", action="store_true", help="list only failing blobs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--report",
        metavar="REPORT.html",
        help="also write the report as one self-contained page: the verdict, error / "
        "tolerance per blob plotted per judge and back end, the net drawn coloured by error, "
        "a sortable table, the files read and the runtimes' versions",
    )
    add_memory_argument(parser)
    add_net_arguments(parser)


def _mean(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    if Path(text).exists():
        from ..io import read_mean

        return tuple(float(v) for v in read_mean(text).reshape(3, -1).mean(axis=1))
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CaffeCompatError(f"--mean takes a mean file or B,G,R values, got {text!r}") from None


def _feeds(files: list[str] | None, shapes: dict, mean: tuple[float, ...] | None) -> dict | None:
    """Arrays from .npy files, or photos resized to the input and mean-subtracted, as
    ``cv2.dnn.blobFromImage`` does (``preprocess.blob_from_image``)."""
    if not files:
        return None
    if len(shapes) != 1:
        raise CaffeCompatError("--input works for nets with one input")
    ((name, shape),) = shapes.items()
    batches = []
    for path in files:
        if path.endswith(".npy"):
            try:
                array = np.load(path, allow_pickle=False).astype(np.float32)
            except (OSError, ValueError) as exc:
                raise CaffeCompatError(f"not a readable .npy array ({exc})", path=path) from None
            batches.append(array if array.ndim == len(shape) else array[None])
        else:
            from ..app.images import read_image
            from ..app.preprocess import blob_from_image

            if len(shape) != 4:
                raise CaffeCompatError(
                    f"an image takes a net input of N x C x H x W; {name} is {list(shape)}",
                    path=path,
                )
            image = read_image(path)  # the size and pixel limits of every photo
            batches.append(blob_from_image(image, shape[2], shape[3], mean or (0.0, 0.0, 0.0)))
    feeds = np.concatenate(batches)
    if feeds.shape[1:] != tuple(shape[1:]):
        raise CaffeCompatError(
            f"inputs have shape {list(feeds.shape[1:])}, the net wants {list(shape[1:])}"
        )
    return {name: feeds}


def _write_page(args: argparse.Namespace, report: Report, options: dict) -> None:
    """The HTML report of ``--report`` (the net read again, without weights, for the drawing)."""
    from ..ir.load import load_net
    from ..ir.phase import NetState
    from ..verify.report_page import write_report_page

    loaded = load_net(args.prototxt, **options)
    state = NetState.make(options["phase"], options["stages"], options["level"])
    tolerance = Tolerance(rtol=args.rtol, atol=args.atol)
    write_report_page(args.report, report, loaded, tolerance=tolerance, state=state)
    print(f"wrote {printable(args.report)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    options = net_options(args)
    if args.report:
        from ..io.atomic import check_target

        if Path(args.report).is_dir():
            raise CaffeCompatError("is a directory; give the report's file name", path=args.report)
        check_target(Path(args.report))  # refused before the verification, not after it
    mean = _mean(args.mean)
    feeds = None
    if args.input:
        from ..ir.load import load_net

        shapes = load_net(args.prototxt, **options).graph.inputs
        feeds = _feeds(args.input, shapes, mean)
    report = verify(
        args.prototxt,
        args.weights,
        onnx_path=args.onnx,
        reference_path=args.reference,
        feeds=feeds,
        batch=args.batch,
        seed=args.seed,
        mean=mean,
        tolerance=Tolerance(rtol=args.rtol, atol=args.atol),
        devices=("cpu",) if args.cpu_only else ("cpu", "cuda"),
        opencv=not args.no_opencv,
        against=None if args.against == "auto" else args.against.split(","),
        precision=args.precision,
        max_memory=args.max_memory,
        **options,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.render(all_rows=not args.failures_only))
    if args.report:
        _write_page(args, report, options)
    return 0 if report.passed else 1
