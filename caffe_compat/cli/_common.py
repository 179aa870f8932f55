"""Arguments several subcommands share, parsed the same way everywhere."""

from __future__ import annotations

import argparse

from ..errors import CaffeCompatError

# How the CLI spells each library remedy (errors.Remedy): flags, never API keywords.
CLI_WORDING: dict[str, str] = {
    "download": "--download",
    "force": "--force",
    "input_shapes": "--input-shape {value}=N,C,H,W",
    "input_shapes_or_typical": "--input-shape {value}=N,C,H,W (or --typical-input-shape)",
    "stages": "--stage NAME (and --phase TRAIN or TEST)",
    "allow_unknown_fields": "--allow-unknown-fields",
    "backend": "--backend {value}",
    "reference": "--reference REF.npz",
    "labels": "--{value}-labels A,B,...",
    "verify_identity": "--age-model/--gender-model PROTOTXT WEIGHTS",
    "max_memory": "--max-memory SIZE",
}


def parse_input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``NAME=1,3,227,227`` (repeatable) -> {name: shape}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, _, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
        except ValueError:
            shape = ()
        if not name or not shape or any(d <= 0 for d in shape):
            raise CaffeCompatError(
                f"--input-shape expects NAME=N,C,H,W with positive sizes, got {item!r}"
            )
        shapes[name] = shape
    return shapes


def add_net_arguments(parser: argparse.ArgumentParser) -> None:
    """Phase, stages, level, input shape overrides and fork-field tolerance."""
    parser.add_argument(
        "--phase", default="TEST", choices=["TEST", "TRAIN"], help="net phase (default TEST)"
    )
    parser.add_argument("--stage", action="append", default=[], help="net stage (repeatable)")
    parser.add_argument("--level", type=int, default=0, help="net level (default 0)")
    parser.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=N,C,H,W",
        help="set or override an input's shape (repeatable)",
    )
    parser.add_argument(
        "--typical-input-shape",
        action="store_true",
        help="run an input without a shape (or a 1x1 placeholder) at the size nets named like "
        "this one usually run at, and say so (--input-shape wins)",
    )
    parser.add_argument(
        "--allow-unknown-fields",
        action="store_true",
        help="skip prototxt fields caffe.proto does not know (Caffe forks' extras)",
    )


def _size(text: str) -> int:
    from ..budget import parse_size

    try:
        return parse_size(text)
    except CaffeCompatError:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 2G, 512M or a byte count, not {text!r}"
        ) from None


def add_memory_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-memory SIZE``: the memory budget (see caffe_compat/budget.py)."""
    parser.add_argument(
        "--max-memory",
        metavar="SIZE",
        type=_size,
        help="refuse steps needing more memory than this, e.g. 2G or 512M (default: 85%% of "
        "what RLIMIT_AS leaves, half of the shared memory available)",
    )


def net_options(args: argparse.Namespace) -> dict:
    """Keyword arguments for ``load_net`` from the shared arguments."""
    return {
        "phase": args.phase,
        "stages": args.stage,
        "level": args.level,
        "input_shapes": parse_input_shapes(args.input_shape),
        "allow_unknown_fields": args.allow_unknown_fields,
        "typical_input_shapes": args.typical_input_shape,
    }
