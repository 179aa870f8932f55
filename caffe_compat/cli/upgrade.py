"""Rewrite an old net definition (V1: `layers { type: CONVOLUTION }`, `blobs_lr`, `input_dim`; or
pre-2014 V0: `layers { layer { type: "conv" kernelsize: 11 } }` with padding layers) in the current
V2 text form, as Caffe's upgrade_net_proto_text does: type strings, `param { lr_mult decay_mult }`,
padding layers folded into the conv/pool they feed, and one Input layer for the deprecated input
fields. Phase rules, fillers and every layer parameter are kept. The output is written atomically
and never overwritten without --force."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..errors import CaffeCompatError
from ..io import load_prototxt, write_prototxt
from ..io.atomic import check_target
from ..io.upgrade import is_v0, upgrade_net
from ..printable import printable

NAME = "upgrade"
HELP = "rewrite a V0 or V1 prototxt in the current V2 form"
ORDER = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prototxt", help="net definition to upgrade (.prototxt, V0, V1 or V2)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="NEW.prototxt", help="where to write the V2 net"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")


def run(args: argparse.Namespace) -> int:
    source, target = Path(args.prototxt), Path(args.output)
    if target.is_dir():
        raise CaffeCompatError("is a directory; give the output file's name", path=str(target))
    check_target(target)  # a folder, device, FIFO or link: refused before any work
    if target.exists() and not args.force:
        raise CaffeCompatError("refusing to overwrite an existing file (pass --force)", path=target)
    net, _ = load_prototxt(source)
    had_inputs, was_v0 = bool(net.input), is_v0(net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        was_v1 = upgrade_net(net, path=str(source))
    for warning in caught:  # e.g. V0 fields Caffe ignores: one plain line each, no source line
        print(f"warning: {printable(str(warning.message))}", file=sys.stderr)
    changes = []
    if was_v0:
        changes.append("V0 layers -> V2")
    elif was_v1:
        changes.append("V1 layers -> V2")
    if had_inputs:
        changes.append("input fields -> Input layer")
    write_prototxt(
        target,
        net,
        comment=f"Upgraded to the V2 format by caffe-compat upgrade from {source.name}",
    )
    what = ", ".join(changes) if changes else "already V2, rewritten unchanged"
    print(f"wrote {printable(str(target))}: {len(net.layer)} layers ({what})")
    return 0
