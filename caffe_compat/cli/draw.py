"""Draw a net as Caffe's draw_net.py did: layers as boxes with their type and key parameters,
blobs as ovals, left to right (--rankdir) and every phase unless --phase picks one. V0, V1 and V2
definitions. The format follows the output's extension (.svg, .png, .dot). Graphviz's dot program
lays the picture out where it is installed; otherwise a built-in layout draws it (SVG, and PNG
painted with OpenCV), so a plain install can draw."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CaffeCompatError
from ..printable import printable

NAME = "draw"
HELP = "draw a net (SVG, PNG or DOT), as Caffe's draw_net.py"
ORDER = 25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prototxt", help="net definition (.prototxt, V0, V1 or V2)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="NET.svg|png|dot", help="where to write it"
    )
    parser.add_argument(
        "--format", choices=("svg", "png", "dot"), help="picture format (default: by extension)"
    )
    parser.add_argument(
        "--rankdir",
        default="LR",
        choices=("LR", "TB", "BT", "RL"),
        help="direction of the flow (default LR, as draw_net.py)",
    )
    parser.add_argument(
        "--phase",
        default="ALL",
        choices=("ALL", "TRAIN", "TEST"),
        help="draw the layers of one phase (default ALL: every layer)",
    )
    parser.add_argument("--stage", action="append", default=[], help="net stage (repeatable)")
    parser.add_argument("--level", type=int, default=0, help="net level (default 0)")
    parser.add_argument(
        "--engine",
        default="auto",
        choices=("auto", "graphviz", "builtin"),
        help="auto (default): Graphviz's dot where installed, else the built-in layout",
    )
    parser.add_argument(
        "--display-lrm", action="store_true", help="show each layer's learning-rate multipliers"
    )
    parser.add_argument(
        "--allow-unknown-fields",
        action="store_true",
        help="skip prototxt fields caffe.proto does not know (Caffe forks' extras)",
    )


def run(args: argparse.Namespace) -> int:
    from ..draw import draw_file

    target = Path(args.output)
    if target.is_dir():
        raise CaffeCompatError("is a directory; give the picture's file name", path=str(target))
    if args.phase == "ALL" and (args.stage or args.level):
        raise CaffeCompatError("--stage and --level need --phase TRAIN or TEST")
    drawing, engine = draw_file(
        args.prototxt,
        target,
        fmt=args.format,
        rankdir=args.rankdir,
        phase=None if args.phase == "ALL" else args.phase,
        stages=tuple(args.stage),
        level=args.level,
        engine=args.engine,
        display_lrm=args.display_lrm,
        allow_unknown_fields=args.allow_unknown_fields,
    )
    layers = len(drawing.layers())
    blobs = len(drawing.shapes) - layers
    how = {"graphviz": "Graphviz", "builtin": "built-in layout", "text": "DOT text"}[engine]
    print(f"wrote {printable(str(target))}: {layers} layers, {blobs} blobs ({how})")
    return 0
