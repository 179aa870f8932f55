"""A judge run in a child process, so that its crash is a line in the report, not ours.

OpenCV's Caffe reader is C++ that does not always survive what a file or a memory cap does to
it: under a 4 GiB ``RLIMIT_AS`` its forward on FCN-32s ended the whole process with a
segmentation fault (measured), where an allocation failure should have been an exception. Run in
a forked child (Linux, macOS), the judge's arrays come back through a pipe, each read straight
into its final array (one copy in this process); a child that raises sends its message back,
and one that dies by a signal becomes a ``ChildFailed`` naming the signal. Where ``fork`` is
missing the function runs here.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import CaffeCompatError


class ChildFailed(CaffeCompatError):
    """The isolated function raised (its message) or its process died (the signal)."""


def run_isolated(
    function: Callable[..., Mapping[str, np.ndarray]], *args: Any
) -> dict[str, np.ndarray]:
    """``function(*args)`` (returning named arrays) in a forked child; its arrays, or
    ``ChildFailed``."""
    if not hasattr(os, "fork"):
        return dict(function(*args))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read)
        _child(function, args, write)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            found, failure = _receive(pipe)
    finally:
        _, status = os.waitpid(pid, 0)
    if failure is not None:
        raise ChildFailed(failure)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        raise ChildFailed(f"its process stopped with signal {number} ({_signal_name(number)})")
    if os.WEXITSTATUS(status) != 0:
        raise ChildFailed(f"its process exited with status {os.WEXITSTATUS(status)}")
    return found


def _child(function: Callable[..., Mapping[str, np.ndarray]], args: tuple, write: int) -> None:
    import faulthandler

    faulthandler.disable()  # a crash here is reported by the parent, in one line
    code = 0
    try:
        with os.fdopen(write, "wb") as pipe:
            try:
                results = function(*args)
            except BaseException as exc:  # sent back as a line: the parent decides
                message = str(exc).strip().splitlines() or [type(exc).__name__]
                pipe.write(_header({"error": f"{type(exc).__name__}: {message[-1]}"}))
                code = 1
            else:
                for name, array in results.items():
                    array = np.asarray(array)
                    if not array.flags.c_contiguous:  # (ascontiguousarray makes 0-d 1-d)
                        array = array.copy(order="C")
                    head = {"name": name, "dtype": array.dtype.str, "shape": list(array.shape)}
                    pipe.write(_header(head))
                    if array.size:
                        pipe.write(array.reshape(-1).view(np.uint8))
                    del array
    except BaseException:
        code = 2
    os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def _header(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def _receive(pipe: Any) -> tuple[dict[str, np.ndarray], str | None]:
    found: dict[str, np.ndarray] = {}
    while True:
        line = pipe.readline()
        if not line:
            return found, None
        try:
            head = json.loads(line)
        except ValueError:
            return found, "its process stopped while sending its results"
        if "error" in head:
            return found, str(head["error"])
        array = np.empty(tuple(head["shape"]), dtype=np.dtype(head["dtype"]))
        view = memoryview(array.reshape(-1).view(np.uint8))  # the array's own bytes
        done = 0
        while done < array.nbytes:
            got = pipe.readinto(view[done:])
            if not got:
                return found, "its process stopped while sending its results"
            done += got
        found[head["name"]] = array


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
