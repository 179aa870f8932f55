"""The one progress bar of the project: downloads, convert, synth, verify, predict over folders.

A bar shows the count (or MB), a percentage when the total is known, the rate and an ETA, and is
drawn on stderr only when stderr is a terminal: pipes, files, CI logs and notebooks get nothing.
The CLI turns every bar off for ``-q`` with :func:`suppressed`, and its log handler calls
:func:`clear_active` before writing, so a message never lands in the middle of a bar (the bar is
redrawn on its next update). Redraws are throttled to ten a second, so updating per chunk or per
layer costs nothing measurable.

No dependency (tqdm would do): the project needs one line of text, not nested or notebook bars.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from .printable import printable

_lock = threading.Lock()
_active: list[Progress] = []  # bars currently drawn on the terminal
_suppressed = 0  # depth of suppressed() scopes


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """No bar is drawn inside this scope (``-q``); restored on exit."""
    global _suppressed
    with _lock:
        _suppressed += 1
    try:
        yield
    finally:
        with _lock:
            _suppressed -= 1


def clear_active() -> None:
    """Erase any drawn bar so the caller can write a line (the bar reappears on its next update)."""
    with _lock:
        for bar in list(_active):
            bar._erase()


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """One line: ``label: 40% [######----] 17.6/43.5 MB  5.2 MB/s  ETA 0:05  status``.

    ``total`` None means unknown (no percentage or ETA). ``unit="B"`` counts bytes and shows MB.
    ``leave`` keeps the final line on close (downloads); otherwise the line is erased. ``done``
    is always counted, drawn or not (callers use it in messages). Use as a context manager or
    call :meth:`close`.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        label: str = "",
        unit: str = "",
        enabled: bool = True,
        leave: bool = False,
        stream: TextIO | None = None,
        interval: float = 0.1,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.label, self.unit, self.leave, self.interval = label, unit, leave, interval
        self.done = 0
        self.status = ""
        self.enabled = enabled and _suppressed == 0 and _is_terminal(self.stream)
        self.start = time.monotonic()
        self._last = float("-inf")
        self._shown = False

    # -- counting ------------------------------------------------------------------------

    def update(self, count: int = 1) -> None:
        """Add ``count`` units done."""
        self.done += count
        self._maybe_draw()

    def set(self, done: int, total: int | None = None) -> None:
        """Set the absolute count (and the total, when it changed)."""
        self.done = done
        if total is not None:
            self.total = total
        self._maybe_draw()

    def describe(self, status: str) -> None:
        """Say what is happening now (shown after the numbers); redraws at once."""
        self.status = status
        self._maybe_draw(force=True)

    def refresh(self) -> None:
        """Redraw now (after :meth:`clear` made room for a message)."""
        self._maybe_draw(force=True)

    # -- drawing -------------------------------------------------------------------------

    def text(self, now: float | None = None) -> str:
        """The line as it would be drawn (also what tests check)."""
        elapsed = max((now if now is not None else time.monotonic()) - self.start, 1e-9)
        parts = []
        total = self.total
        if total:
            share = min(self.done / total, 1.0)
            filled = int(20 * share)
            parts.append(f"{int(100 * share)}% [{'#' * filled}{'-' * (20 - filled)}]")
        parts.append(self._amount())
        rate = self.done / elapsed
        if self.done:
            parts.append(self._rate(rate))
        if total and self.done and self.done < total:
            parts.append(f"ETA {_duration((total - self.done) / rate)}")
        else:
            parts.append(_duration(elapsed))
        if self.status:
            parts.append(self.status)
        line = "  ".join(p for p in parts if p)
        line = f"{self.label}: {line}" if self.label else line
        return printable(line)  # labels quote net and file names: never drive the terminal

    def _amount(self) -> str:
        if self.unit == "B":
            done = f"{self.done / 1e6:.1f}"
            return f"{done}/{self.total / 1e6:.1f} MB" if self.total else f"{done} MB"
        total = f"/{self.total}" if self.total else ""
        return f"{self.done}{total} {self.unit}".rstrip()

    def _rate(self, rate: float) -> str:
        if self.unit == "B":
            return f"{rate / 1e6:.1f} MB/s"
        unit = self.unit or "it"
        if rate < 1:
            return f"{1 / rate:.1f} s/{unit.rstrip('s') or unit}"
        return f"{rate:.1f} {unit}/s"

    def _maybe_draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = bool(self.total) and self.done >= self.total  # the last state is always shown
        if not force and not finished and now - self._last < self.interval:
            return
        self._last = now
        width = max(shutil.get_terminal_size((80, 24)).columns - 1, 20)
        line = self.text(now)[:width]
        with _lock:
            self.stream.write(f"\r\x1b[2K{line}")
            self.stream.flush()
            self._shown = True
            if self not in _active:
                _active.append(self)

    def _erase(self) -> None:
        """Blank the line (caller holds the lock)."""
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False

    def clear(self) -> None:
        """Erase the bar so a message can use the line; the next update redraws it."""
        with _lock:
            self._erase()

    def close(self) -> None:
        """Final state: kept as a finished line when ``leave``, else erased."""
        if self.enabled and self.leave:
            self._maybe_draw(force=True)
            with _lock:
                self.stream.write("\n")
                self.stream.flush()
                self._shown = False
        else:
            self.clear()
        with _lock:
            if self in _active:
                _active.remove(self)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
