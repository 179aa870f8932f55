"""List the model zoo: every model's name, task, weights size and cache state (cached: the
released weights file is in the cache; converted: its converted arrays are too), and its title.
Sizes are the cached file's, else the card's, else at least the deploy net's float32 parameters
(shown with >=). Nothing is hashed or downloaded; `caffe-compat pull NAME` does that."""

from __future__ import annotations

import argparse
import json

from ..app.pull import ModelState, model_state
from ..zoo import list_models

NAME = "zoo"
HELP = "list the zoo's models, their sizes and what the cache holds"
ORDER = 62


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache root (default: $CAFFE_COMPAT_HOME, else ~/.cache/caffe-compat)",
    )


def _size(state: ModelState) -> str:
    text = f"{state.size / 1e6:.1f} MB"
    return f">={text}" if state.size_kind == "estimate" else text


def _state(state: ModelState) -> str:
    return "converted" if state.converted else "cached" if state.cached else "-"


def run(args: argparse.Namespace) -> int:
    states = [model_state(name, args.cache_dir) for name in list_models()]
    if args.json:
        print(json.dumps([state.as_dict() for state in states], indent=2))
        return 0
    rows = [("NAME", "TASK", "SIZE", "STATE", "TITLE")]
    rows += [(s.card.name, s.card.task, _size(s), _state(s), s.card.title) for s in states]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    return 0
