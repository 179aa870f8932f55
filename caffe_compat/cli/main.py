"""``caffe-compat``: one entry point, one module per subcommand.

Exit codes: 0 success, 1 a check failed (``verify``), 2 bad input (one line on stderr, never a
traceback), 3 an internal error (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, TextIO

from .. import __version__
from ..errors import CaffeCompatError
from ..printable import printable, printable_lines

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def _commands() -> list[ModuleType]:
    """Every ``caffe_compat.cli`` module defining NAME, ordered by its ORDER."""
    from .. import cli

    found = []
    for info in pkgutil.iter_modules(cli.__path__):
        if info.name.startswith("_") or info.name == "main":
            continue
        module = importlib.import_module(f"{cli.__name__}.{info.name}")
        if hasattr(module, "NAME"):
            found.append(module)
    return sorted(found, key=lambda m: (getattr(m, "ORDER", 50), m.NAME))


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line (argparse's own code, our wording)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"caffe-compat: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="caffe-compat",
        description="Read, convert and verify Caffe models without Caffe.",
    )
    parser.add_argument("--version", action="version", version=f"caffe-compat {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _commands():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__)
        command.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


class _PrintableStdout:
    """stdout for a command's run: layer, blob and file names in tables and result lines come
    from files, so control characters are shown escaped (one place for every command)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(printable_lines(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    stdout = sys.stdout
    sys.stdout = _PrintableStdout(stdout)  # type: ignore[assignment]
    try:
        return _run(args)
    finally:
        sys.stdout = stdout


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args) or 0)
    except CaffeCompatError as exc:
        if getattr(args, "json", False):
            print(json.dumps(exc.to_dict()))
        print(f"caffe-compat: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("caffe-compat: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `caffe-compat inspect ... | head`: the reader went away; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"caffe-compat: internal error: {type(exc).__name__}: {printable(str(exc))} (rerun "
            "with --debug for the traceback and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
