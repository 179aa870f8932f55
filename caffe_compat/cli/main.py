"""``caffe-compat``: one entry point, one module per subcommand (also ``python -m caffe_compat``).

Exit codes: 0 success, 1 a check failed (``verify``), 2 bad input (one line on stderr, never a
traceback), 3 an internal error (``--debug`` shows the traceback).

Messages: the library logs through ``logging.getLogger(__name__)`` and never configures logging;
only this entry point installs a handler (on the ``caffe_compat`` logger, for the length of the
command): warnings by default, ``-v`` adds progress notes, ``-vv`` debug detail, ``-q`` errors only
and no progress bars. Both flags work before or after the subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, TextIO

from .. import __version__, progress
from ..errors import CaffeCompatError
from ..printable import printable, printable_lines
from ._common import CLI_WORDING

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
    """argparse, but usage errors exit 2 with one line (argparse's own code, our wording) that
    points at the --help of the command that was being parsed."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"caffe-compat: error: {message} (see {self.prog} --help)\n")


def _add_verbosity(parser: argparse.ArgumentParser, suffix: str, shown: bool) -> None:
    """-q/-v; the subcommand's copies use other dests so they add to the global ones."""
    parser.add_argument(
        "-q",
        "--quiet",
        dest=f"quiet{suffix}",
        action="store_true",
        help="errors only: no warnings, notes or progress bars" if shown else argparse.SUPPRESS,
    )
    parser.add_argument(
        "-v",
        "--verbose",
        dest=f"verbose{suffix}",
        action="count",
        default=0,
        help="more detail on stderr (-v notes, -vv debug)" if shown else argparse.SUPPRESS,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="caffe-compat",
        description="Read, convert and verify Caffe models without Caffe. Judges of every "
        "conversion: the float64 reference (Caffe's formulas in numpy, always there), OpenCV "
        "4's Caffe reader (when installed) and stored reference arrays (recorded from Caffe).",
    )
    parser.add_argument("--version", action="version", version=f"caffe-compat {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    _add_verbosity(parser, "", shown=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _commands():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__)
        command.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        _add_verbosity(command, "_sub", shown=True)
        module.add_arguments(command)
        command.set_defaults(_run=module.run, _parser=command)
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


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; an unknown option is reported by the subcommand's own parser (its --help)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        owner = getattr(args, "_parser", parser)
        owner.error(f"unrecognized arguments: {' '.join(extras)}")
    args.quiet = bool(args.quiet or getattr(args, "quiet_sub", False))
    args.verbose = args.verbose + getattr(args, "verbose_sub", 0)
    return args


class _StderrHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` (not the one at start), erasing any progress bar.
    stdout is flushed first: where both go to one file or pipe (``2>&1``), a result line already
    printed lands before the log line, never merged with it or after it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            sys.stdout.flush()
            progress.clear_active()
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


class _Formatter(logging.Formatter):
    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        # Messages quote names from files: one line each, escaped as everywhere (debug detail
        # may keep its own line breaks).
        message = record.getMessage()
        shown = printable_lines if record.levelno <= logging.DEBUG else printable
        message = shown(message)
        if record.exc_info and self.debug:
            message += "\n" + self.formatException(record.exc_info)
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        where = f"[{record.name}] " if self.debug else ""
        return f"caffe-compat: {level}{where}{message}"


@contextlib.contextmanager
def _messages(quiet: bool, verbose: int) -> Iterator[None]:
    """The CLI's handler on the package logger for one command; everything restored after."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO)[min(verbose, 1)]
    if verbose >= 2 and not quiet:
        level = logging.DEBUG
    logger = logging.getLogger("caffe_compat")
    handler = _StderrHandler(level)
    handler.setFormatter(_Formatter(debug=level <= logging.DEBUG))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        with (
            progress.suppressed() if quiet else contextlib.nullcontext(),
            warnings.catch_warnings(),
        ):
            # Library warnings quote names from files too: one escaped line through the handler.
            warnings.showwarning = _show_warning
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    logging.getLogger("caffe_compat").warning("%s", message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    from ..app.images import MAX_PIXELS
    from ..app.pixel_limit import opencv_pixel_limit
    from ..headroom import lean_allocator

    lean_allocator()  # under RLIMIT_AS only: freed memory goes back (this process is ours)

    stdout = sys.stdout
    sys.stdout = _PrintableStdout(stdout)  # type: ignore[assignment]
    try:
        # A cv2 first loaded during the command refuses bitmaps over the photo limit itself.
        with _messages(args.quiet, args.verbose), opencv_pixel_limit(MAX_PIXELS):
            return _run(args)
    finally:
        sys.stdout = stdout


def _refused(args: argparse.Namespace, exc: CaffeCompatError) -> int:
    message = exc.render(CLI_WORDING)
    if getattr(args, "json", False):
        print(json.dumps({**exc.to_dict(), "message": message}))
    print(f"caffe-compat: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args) or 0)
    except CaffeCompatError as exc:
        return _refused(args, exc)
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
        from ..budget import memory_failure
        from ..errors import disk_full

        failure = memory_failure(exc) or disk_full(exc)  # the machine's limits: one line each
        if failure is not None:
            return _refused(args, failure)
        print(
            f"caffe-compat: internal error: {type(exc).__name__}: {printable(str(exc))} (rerun "
            "with --debug for the traceback and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
