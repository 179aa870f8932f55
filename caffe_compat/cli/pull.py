"""Get a zoo model ready: download its released weights (unless they are already in the cache),
check them against the card's published identity, convert them into the zoo's deploy net and
cache the converted arrays, one line per step. Without network (or with --offline) the one line
says which file to fetch, the exact path to put it at and where to get it."""

from __future__ import annotations

import argparse

from ..app.pull import pull
from ..zoo import list_models, read_card

NAME = "pull"
HELP = "download, verify, convert and cache a zoo model's released weights"
ORDER = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="NAME",
        help=f"zoo model ({', '.join(list_models())}), or a card file (CARD.toml) of your own",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="download again and rebuild the conversion cache even if the files are there "
        "(an existing file is replaced only by a verified copy)",
    )
    parser.add_argument(
        "--offline", action="store_true", help="never download; use what is in the cache"
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache root (default: $CAFFE_COMPAT_HOME, else ~/.cache/caffe-compat)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")


def run(args: argparse.Namespace) -> int:
    model = read_card(args.model) if args.model.endswith(".toml") else args.model
    pull(
        model,
        cache_dir=args.cache_dir,
        force=args.force,
        offline=args.offline,
        progress=not args.no_progress,
        report=lambda line: print(line, flush=True),
    )
    return 0
