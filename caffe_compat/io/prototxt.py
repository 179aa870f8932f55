"""Net definitions in protobuf text format (.prototxt), V1 or V2, parsed by protobuf itself.

Parse errors are turned into one line with the file, line number and enclosing layer name. A cheap
scan of the text maps line numbers to layer names, so later errors can point at the layer too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message

from ..errors import FileFormatError, PrototxtError
from ..proto import caffe_pb2
from .sniff import Kind, explain, sniff


@dataclass
class LineIndex:
    """Where each top-level layer block starts, and its name: line numbers -> layer names."""

    starts: list[tuple[int, str]] = field(default_factory=list)  # (first line, layer name)

    def layer_at(self, line: int) -> str | None:
        """Name of the layer whose block contains ``line`` (1-based), if any."""
        found = None
        for start, name in self.starts:
            if start > line:
                break
            found = name
        return found

    def line_of(self, layer: str) -> int | None:
        for start, name in self.starts:
            if name == layer:
                return start
        return None


_LAYER_OPEN = re.compile(r"^\s*(layers?)\s*:?\s*\{")
_NAME = re.compile(r'^\s*name\s*:\s*"((?:[^"\\]|\\.)*)"')
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")


def index_layers(text: str) -> LineIndex:
    """Record the first line and name of every top-level ``layer {``/``layers {`` block."""
    index = LineIndex()
    depth = 0
    current: int | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        code = _STRING.sub('""', raw).split("#", 1)[0]
        if depth == 0 and _LAYER_OPEN.match(code):
            current = number
            index.starts.append((number, ""))
        elif depth == 1 and current is not None and index.starts[-1][1] == "":
            match = _NAME.match(raw)
            if match:
                index.starts[-1] = (current, match.group(1))
        depth = max(depth + code.count("{") - code.count("}"), 0)
        if depth == 0:
            current = None
    return index


def read_text(path: str | os.PathLike[str], expected: str = "prototxt") -> str:
    """Read a text file strictly as UTF-8, diagnosing binary or downloaded-page content."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileFormatError("no such file", path=str(path)) from None
    except IsADirectoryError:
        raise FileFormatError("is a directory, not a file", path=str(path)) from None
    except OSError as exc:
        raise FileFormatError(f"cannot read: {exc.strerror}", path=str(path)) from None
    kind = sniff(raw[:4096])
    problem = explain(kind, raw[:4096], f"text {expected}")
    if problem is None and kind in (Kind.BINARY, Kind.HDF5):
        problem = (
            f"this is a binary file, not a text {expected}: did you swap the prototxt and "
            "the weights arguments?"
        )
    if problem:
        raise FileFormatError(problem, path=str(path))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FileFormatError(
            f"not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            path=str(path),
            line=line,
        ) from None


def parse_text(
    text: str,
    message: Message,
    *,
    path: str = "<text>",
    allow_unknown_fields: bool = False,
) -> LineIndex:
    """Merge ``text`` into ``message``; return the layer line index. Errors are one line."""
    index = index_layers(text)
    try:
        text_format.Merge(text, message, allow_unknown_field=allow_unknown_fields)
    except text_format.ParseError as exc:
        line = exc.GetLine() if hasattr(exc, "GetLine") else None
        reason = re.sub(r"^\d+:\d+\s*:\s*", "", str(exc)).rstrip(".")
        reason = reason.replace('Message type "caffe.', 'message "caffe.')
        if "has no field named" in reason:
            reason += " (a field from a Caffe fork? --allow-unknown-fields skips such fields)"
        layer = index.layer_at(line) if line else None
        raise PrototxtError(reason, path=path, line=line, layer=layer or None) from None
    return index


def load_prototxt(
    path: str | os.PathLike[str], *, allow_unknown_fields: bool = False
) -> tuple[caffe_pb2.NetParameter, LineIndex]:
    """Parse a net definition (V0, V1 or V2 text) without upgrading it."""
    text = read_text(path)
    net = caffe_pb2.NetParameter()
    index = parse_text(text, net, path=str(path), allow_unknown_fields=allow_unknown_fields)
    return net, index


def load_solver(path: str | os.PathLike[str]) -> caffe_pb2.SolverParameter:
    """Parse a solver definition (used to find the net a solver trains)."""
    solver = caffe_pb2.SolverParameter()
    parse_text(read_text(path, "solver prototxt"), solver, path=str(path))
    return solver
