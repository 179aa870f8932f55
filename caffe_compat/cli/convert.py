"""Convert a Caffe net (V1 or V2 prototxt; V1, V2 or HDF5 weights; train_val nets in TEST phase)
to ONNX and PyTorch, check parity on a few inputs and print a short report. Targets: onnx
(PREFIX.onnx), torch (a torch.export program, PREFIX.pt2) and torch-weights (PREFIX.safetensors:
the weights and the net definition, no pickle, loaded by caffe_compat.load_torch; also written
when torch.export cannot trace the net). Outputs are written together and atomically, record
their source, and are never overwritten without --force."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..converters.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from ..errors import CaffeCompatError
from ..printable import printable
from ..tools.convert import DEFAULT_TARGETS, TARGETS, convert
from ._common import add_memory_argument, add_net_arguments, net_options

if TYPE_CHECKING:
    from ..verify.compare import Report

NAME = "convert"
HELP = "convert to ONNX and PyTorch, with a quick parity check"
ORDER = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prototxt", help="net definition (.prototxt, V1 or V2)")
    parser.add_argument("weights", help="weights (.caffemodel V1/V2, or HDF5)")
    parser.add_argument(
        "-o",
        "--output",
        metavar="PREFIX",
        help="output prefix, or a file name such as age.onnx (its suffix is dropped: age.onnx, "
        "age.pt2); default: the weights' name, here",
    )
    parser.add_argument(
        "--to",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated targets: {', '.join(TARGETS)} (default: %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument(
        "--optimize", action="store_true", help="fold BatchNorm/Scale into convolutions"
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset to write, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET}); every "
        "one is tested in ONNX Runtime and OpenCV 5",
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="store the ONNX file's weights as float16 (about half the size; computation, inputs "
        "and outputs stay float32; refused for weights beyond 65504)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the parity check")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_memory_argument(parser)
    add_net_arguments(parser)


def run(args: argparse.Namespace) -> int:
    targets = [t.strip() for t in args.to.split(",") if t.strip()]
    if not targets or any(t not in TARGETS for t in targets):
        raise CaffeCompatError(
            f"--to takes {', '.join(TARGETS)} (comma-separated), got {args.to!r}"
        )
    result = convert(
        args.prototxt,
        args.weights,
        out_prefix=args.output,
        targets=targets,
        force=args.force,
        optimize=args.optimize,
        check=not args.no_check,
        max_memory=args.max_memory,
        opset=args.opset,
        fp16=args.fp16,
        **net_options(args),
    )
    report = result.report
    if args.json:
        print(
            json.dumps(
                {
                    "outputs": {k: str(v) for k, v in result.outputs.items()},
                    "timings_s": result.timings,
                    "parity": report.to_dict() if report else None,
                    "notes": result.notes,
                },
                indent=2,
            )
        )
    else:
        for kind, path in result.outputs.items():
            print(f"wrote {kind:<5} {printable(str(path))}")
        for note in result.notes:
            print(f"note  {printable(note)}")
        total = sum(result.timings.values())
        print(
            f"time  {total:.2f} s ("
            + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
            + ")"
        )
        if report:
            for line in check_lines(report):
                print(line)
            if "torch-cpu" in report.references:
                print(
                    f"check reference: {report.references['torch-cpu']}; OpenCV 4 is the Caffe "
                    "reference (pip install 'opencv-python-headless<5')"
                )
            print("parity PASS" if report.passed else "parity FAIL (run `caffe-compat verify`)")
    return 0 if report is None or report.passed else 1


FAILED_ROWS_SHOWN = 3


def check_lines(report: Report) -> list[str]:
    """The quick check's summary: argmax agreement, the final outputs' largest errors, and
    where parity failed the first failing rows themselves (the final outputs may well pass
    while a value before them does not)."""
    lines = []
    for output in report.argmax:
        lines.append(
            f"check {output.backend} vs {output.reference}: argmax {output.agree}/{output.total}"
            + (f" (+{output.ties} at near-ties)" if output.ties else "")
        )
    finals = {a.output for a in report.argmax}
    for (_, value), c in report.worst().items():
        if value in finals:
            lines.append(
                f"check {c.blob} {c.backend} vs {c.reference}: max abs error {c.max_abs:.3g}"
            )
    failed = [c for c in report.comparisons if not c.passed]
    for c in failed[:FAILED_ROWS_SHOWN]:
        lines.append(
            f"check {printable(c.value)} {c.backend} vs {c.reference}: max abs error "
            f"{c.max_abs:.3g}, limit {c.limit:.3g}  FAIL"
        )
    if len(failed) > FAILED_ROWS_SHOWN:
        lines.append(f"check {len(failed) - FAILED_ROWS_SHOWN} more rows FAIL")
    return lines
