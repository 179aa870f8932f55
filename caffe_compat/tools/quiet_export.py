"""Silence torch.export while it fails, for the exporting thread only, and undo it afterwards.

torch.export logs a whole graph (``torch.fx.experimental.symbolic_shapes``) and ``print``s a partial
one to ``sys.stderr`` when it gives up; ``convert`` then saves a pickled module, so that output is
noise. Library code must not disable logging for the process (a background thread's records were
lost) nor swallow other threads' stderr, so both are caught per thread and handed to our own
logger at DEBUG (``caffe-compat -vv`` shows them).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

log = logging.getLogger(__name__)
# torch.export's loggers that dump whole graphs when it gives up (the fallback makes that noise).
TORCH_EXPORT_LOGGERS = (
    "torch.export",
    "torch._export",
    "torch._dynamo",
    "torch.fx.experimental.symbolic_shapes",
    "torch._functorch",
    "torch._subclasses.fake_tensor",
)


class _ThisThreadOnly(logging.Filter):
    """Drops (and keeps) the records one thread emits; other threads' records pass."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread
        self.caught: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread == self.thread:
            self.caught.append(record)
            return False
        return True


class _ThreadStderr(io.TextIOBase):
    """sys.stderr for the length of a scope: one thread's writes are kept aside, every other
    thread's go to the real stream (a handler created meanwhile keeps working afterwards)."""

    def __init__(self, real: TextIO, thread: int) -> None:
        self.real, self.thread, self.active = real, thread, True
        self.caught = io.StringIO()

    def write(self, text: str) -> int:
        if self.active and threading.get_ident() == self.thread:
            return self.caught.write(text)
        return self.real.write(text)

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return self.real.isatty()

    def fileno(self) -> int:
        return self.real.fileno()


def _torch_export_loggers() -> list[logging.Logger]:
    """The loggers under TORCH_EXPORT_LOGGERS that exist now (torch makes them at import)."""
    prefixes = tuple(name + "." for name in TORCH_EXPORT_LOGGERS)
    return [
        logger
        for name, logger in list(logging.root.manager.loggerDict.items())
        if isinstance(logger, logging.Logger)
        and (name in TORCH_EXPORT_LOGGERS or name.startswith(prefixes))
    ]


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[None]:
    """Silence what torch.export says while it fails, and nothing else.

    Its loggers get a filter that drops only this thread's records, and ``print(...,
    file=sys.stderr)`` of a partial graph (torch.export does that) is caught only for this thread;
    both are undone on exit and other threads' logging and output pass untouched. What was
    caught is handed to this module's logger at DEBUG (``caffe-compat -vv``)."""
    thread = threading.get_ident()
    loggers = _torch_export_loggers()
    quiet = _ThisThreadOnly(thread)
    for logger in loggers:
        logger.addFilter(quiet)
    real = sys.stderr
    proxy = _ThreadStderr(real, thread)
    sys.stderr = proxy
    try:
        yield
    finally:
        proxy.active = False
        if sys.stderr is proxy:
            sys.stderr = real
        for logger in loggers:
            logger.removeFilter(quiet)
        for record in quiet.caught:
            log.debug("torch.export [%s]: %s", record.name, record.getMessage())
        if proxy.caught.getvalue().strip():
            log.debug("torch.export printed:\n%s", proxy.caught.getvalue().rstrip())
