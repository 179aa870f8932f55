"""Hostile names through every human-facing output: nothing a name holds may reach a terminal
raw, and no name may add a line.

``hostile_name`` builds names from pieces that forge lines (line feeds, carriage returns, line
separators), drive terminals (ANSI escapes, C1 controls, bell), reorder text (bidi controls),
or come from undecodable file names (lone surrogates); ``problems(name)`` sends one name through
each output mode (error lines, predict's result and skipped lines, log records, progress
labels) and says what leaked. The net mutator renames layers and blobs with ``hostile_name``
too, and the CLI harness checks everything the commands print (``leaks``).
"""

from __future__ import annotations

import io
import logging
import random
import re
from types import SimpleNamespace

PIECES = (
    "\n",
    "\r",
    "\r\n",
    "\x1b[2J\x1b[H",
    "\x1b]0;owned\x07",
    "\x9b31m",
    "\u202e",
    "\u2066",
    "\u2028",
    "\x00",
    "\t",
    "\x7f",
    "\ufeff",
    "\u200b",
    "fake.jpg: face 1 at x=0 y=0 w=9 h=9: age (25, 32) 99.9%",
    "caffe-compat: error: ",
    "PASS",
    "é中\U0001f600",
    "\\x0a",
    '"',
    " ",
    "a",
)
FILE_NAME_PIECES = ("\udcff", "\udc80")  # undecodable bytes of a file name (surrogateescape)
# What must never appear raw: every control but tab and line feed (those are checked by line
# counts), DEL, C1, zero-width and bidi controls, separators, BOM, lone surrogates.
RAW = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def hostile_name(rng: random.Random, *, file_name: bool = False) -> str:
    pieces = PIECES + (FILE_NAME_PIECES if file_name else ())
    return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 5))) + rng.choice(
        ("", ".jpg", "_x")
    )


def leaks(text: str) -> str | None:
    """The first raw character in ``text`` that escaping should have caught, described."""
    found = RAW.search(text)
    return None if found is None else f"raw {found.group()!r} at {found.start()}"


def _one_line(what: str, text: str) -> list[str]:
    out = []
    if "\n" in text.rstrip("\n"):
        out.append(f"{what}: {text.count(chr(10))} line breaks")
    if leaks(text):
        out.append(f"{what}: {leaks(text)}")
    return out


def problems(name: str) -> list[str]:
    """Every output mode that shows ``name`` wrongly."""
    from caffe_compat.cli.main import _Formatter
    from caffe_compat.cli.predict import face_line
    from caffe_compat.errors import CaffeCompatError
    from caffe_compat.progress import Progress

    found: list[str] = []
    error = CaffeCompatError(f'layer "{name}" is odd', path=name, layer=name, blob=name)
    found += _one_line("error line", str(error))
    face = SimpleNamespace(
        path=name,
        box=(0, 0, 9, 9),
        face=1,
        age="(25, 32)",
        age_prob=0.9,
        age_top2=[("(25, 32)", 0.9), ("(38, 43)", 0.05)],
        gender="Male",
        gender_prob=0.9,
    )
    found += _one_line("predict result", face_line(face))
    found += _one_line("skipped line", f"caffe-compat: skipped {CaffeCompatError('x', path=name)}")
    record = logging.LogRecord("caffe_compat.x", logging.WARNING, "", 0, "name %s", (name,), None)
    found += _one_line("log line", _Formatter(debug=False).format(record))
    bar = Progress(2, label=name, stream=io.StringIO())
    bar.describe(name)
    found += _one_line("progress label", bar.text())
    return found
