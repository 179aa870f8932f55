"""The one progress bar: rate and ETA, bytes as MB, drawn only on a terminal, off under -q, out
of the way of log lines."""

from __future__ import annotations

import io

import pytest

from caffe_compat import progress
from caffe_compat.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """A settable time.monotonic for the progress module."""
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_rate_and_eta_from_elapsed_time(clock):
    bar = Progress(10, label="synth", unit="layers", stream=Terminal())
    clock[0] += 2.0
    bar.set(4)  # 4 layers in 2 s: 2 layers/s, 6 left: 3 s
    assert bar.text() == "synth: 40% [########------------]  4/10 layers  2.0 layers/s  ETA 0:03"
    bar.describe("conv5")
    assert bar.text().endswith("ETA 0:03  conv5")


def test_slow_steps_show_seconds_per_step_and_finished_shows_elapsed(clock):
    bar = Progress(3, label="convert", unit="steps", stream=Terminal())
    clock[0] += 10.0
    bar.update()
    assert "10.0 s/step" in bar.text() and "ETA 0:20" in bar.text()
    clock[0] += 65.0
    bar.update(2)
    assert bar.text().endswith("3/3 steps  25.0 s/step  1:15")


def test_bytes_are_shown_in_mb_and_unknown_totals_have_no_eta(clock):
    bar = Progress(43_500_000, label="downloading age_net.caffemodel", unit="B", stream=Terminal())
    clock[0] += 2.0
    bar.update(17_600_000)
    assert "17.6/43.5 MB  8.8 MB/s  ETA 0:03" in bar.text()
    open_ended = Progress(None, label="downloading", unit="B", stream=Terminal())
    clock[0] += 1.0
    open_ended.update(3_000_000)
    assert open_ended.text() == "downloading: 3.0 MB  3.0 MB/s  0:01"


def test_drawn_on_a_terminal_only_and_never_under_suppressed():
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        with Progress(2, label="x", unit="photos", stream=stream, interval=0) as bar:
            bar.update(2)
            assert bar.done == 2  # counted either way
    assert "2/2 photos" in terminal.getvalue() and pipe.getvalue() == ""
    quiet = Terminal()
    with progress.suppressed(), Progress(2, label="x", stream=quiet, interval=0) as bar:
        bar.update(2)
    assert quiet.getvalue() == ""
    assert Progress(2, stream=Terminal()).enabled  # restored after the scope


def test_clear_active_makes_room_for_a_message_and_leave_keeps_the_last_line(clock):
    terminal = Terminal()
    bar = Progress(4, label="predict", unit="photos", stream=terminal, interval=0)
    clock[0] += 1.0
    bar.update()
    progress.clear_active()
    assert terminal.getvalue().endswith("\r\x1b[2K")  # the line is blank for the log record
    bar.refresh()
    assert terminal.getvalue().endswith("\r\x1b[2K" + bar.text())  # redrawn after the message
    bar.close()
    kept = Terminal()
    with Progress(1, label="downloading", unit="B", stream=kept, leave=True, interval=0) as b:
        b.update(1)
    assert kept.getvalue().endswith("\n") and "downloading: 100%" in kept.getvalue()


def test_throttled_to_the_interval(clock):
    terminal = Terminal()
    bar = Progress(10_000, stream=terminal, interval=0.1)
    for _ in range(1000):
        bar.update()  # the clock stands still: one draw, not a thousand
    assert terminal.getvalue().count("\r\x1b[2K") == 1
