"""Show what a Caffe model holds: format, layers, wiring, output shapes (Caffe's rules),
parameter shapes and counts, and every mismatch between the prototxt and the weights; for a mean
image (mean.binaryproto), its shape and per-channel means.
Exit code 2 when the files cannot be read or disagree."""

from __future__ import annotations

import argparse
import json

from ..tools.inspect import (
    inspect_blobproto,
    inspect_net,
    inspect_weights,
    looks_like_weights,
    render,
    render_blobproto,
)
from ._common import add_net_arguments, net_options

NAME = "inspect"
HELP = "show layers, shapes, parameters and net/weights mismatches"
ORDER = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prototxt",
        help="net definition (.prototxt), or a weights file alone, or a mean.binaryproto",
    )
    parser.add_argument("weights", nargs="?", help="weights (.caffemodel, V1/V2, or HDF5)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_net_arguments(parser)


def run(args: argparse.Namespace) -> int:
    alone = args.weights is None and looks_like_weights(args.prototxt)
    mean = inspect_blobproto(args.prototxt) if alone else None
    if mean is not None:
        print(json.dumps(mean, indent=2) if args.json else render_blobproto(mean))
        return 0
    if alone:
        report = inspect_weights(args.prototxt)
    else:
        report = inspect_net(args.prototxt, args.weights, **net_options(args))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 2 if report["issues"] else 0
