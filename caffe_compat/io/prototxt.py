"""Net definitions in protobuf text format (.prototxt), V1 or V2, parsed by protobuf itself.

Parse errors are turned into one line with the file, line number and enclosing layer name. A cheap
scan of the text maps line numbers to layer names, so later errors can point at the layer too.

protobuf's text parser reads about 1 MB/s and keeps a few KB per layer, so a 50 MB definition
would stall for a minute and take gigabytes: files over ``MAX_PROTOTXT_BYTES`` and texts with over
``MAX_LAYERS`` top-level layers are refused before parsing. Both are far above any published net
(ResNet-152's deploy prototxt is about 150 KB and 500 layers) and can be raised with the
environment variables ``CAFFE_COMPAT_MAX_PROTOTXT_BYTES`` and ``CAFFE_COMPAT_MAX_LAYERS``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from google.protobuf import text_format
from google.protobuf.message import Message

from ..errors import CaffeCompatError, FileFormatError, PrototxtError, Remedy
from ..proto import caffe_pb2
from .sniff import Kind, explain, sniff
from .source import open_regular

MAX_PROTOTXT_BYTES = 8 * 2**20
MAX_LAYERS = 50_000


def _limit(name: str, default: int) -> int:
    """A limit, or its override from the environment variable ``name`` (a positive integer)."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise CaffeCompatError(f"{name} must be a positive integer, not {text!r}")
    return value


@dataclass
class LineIndex:
    """Where each top-level layer block starts and ends, and its name: line numbers -> layers."""

    starts: list[tuple[int, str]] = field(default_factory=list)  # (first line, layer name)
    ends: list[int] = field(default_factory=list)  # last line of each block, same order
    # Fields skipped under allow_unknown_fields: (line, "caffe.Message.field"), for the report.
    skipped: list[tuple[int, str]] = field(default_factory=list)
    # Entries read otherwise than written under allow_unknown_fields: (line, what), likewise.
    repaired: list[tuple[int, str]] = field(default_factory=list)

    def layer_at(self, line: int) -> str | None:
        """Name of the layer whose block contains ``line`` (1-based), if any."""
        for (start, name), end in zip(self.starts, self.ends):
            if start <= line <= end:
                return name or None
        return None

    def line_of(self, layer: str) -> int | None:
        for start, name in self.starts:
            if name == layer:
                return start
        return None


_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
    r"|(?P<comment>#[^\n]*)|(?P<open>[{<])|(?P<close>[}>])|(?P<ident>[A-Za-z_]\w*)|(?P<newline>\n)"
)
_UNESCAPE = re.compile(r"\\(.)")


def _tokens(text: str) -> Iterator[tuple[str, re.Match[str], int, int]]:
    """(kind, match, line, depth) of each string, brace and identifier of ``text`` (comments
    skipped): depth is the nesting before an opening brace and after a closing one."""
    depth, line = 0, 1
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or ""
        if kind == "newline":
            line += 1
        elif kind == "close":
            depth = max(depth - 1, 0)
            yield kind, match, line, depth
        elif kind != "comment":
            yield kind, match, line, depth
            depth += kind == "open"


def index_layers(text: str) -> LineIndex:
    """Record the lines and name of every top-level ``layer {``/``layers {`` block.

    A small tokenizer (strings, comments, braces, identifiers) so one-line layers and braces
    inside strings or comments are handled.
    """
    index = LineIndex()
    line = 1
    pending: int | None = None  # line of a top-level "layer"/"layers" keyword awaiting its "{"
    in_layer = False
    in_v0_block = False  # inside a V0 net's ``layers { layer { name: ... } }`` inner block
    last_ident = ""
    for kind, match, line, depth in _tokens(text):
        if kind == "open":
            if depth == 0 and pending is not None:
                index.starts.append((pending, ""))
                index.ends.append(line)
                in_layer = True
            if depth == 1 and in_layer and last_ident == "layer":
                in_v0_block = True
            pending, last_ident = None, ""
        elif kind == "close":
            if depth == 0 and in_layer:
                index.ends[-1] = line
                in_layer = False
            if depth <= 1:
                in_v0_block = False
            last_ident = ""
        elif kind == "ident":
            pending = line if depth == 0 and match.group() in ("layer", "layers") else None
            named_depth = depth == 1 or (depth == 2 and in_v0_block)
            last_ident = match.group() if named_depth else ""
        elif kind == "string":
            if in_layer and last_ident == "name" and not index.starts[-1][1]:
                name = _UNESCAPE.sub(r"\1", match.group()[1:-1])
                index.starts[-1] = (index.starts[-1][0], name)
            last_ident = ""
    if in_layer:  # unterminated block: it runs to the end of the text
        index.ends[-1] = text.count("\n") + 1
    return index


def v1_string_types(text: str) -> list[tuple[int, int]]:
    """(offset, line) of each top-level ``layers`` keyword whose block sets ``type`` to a quoted
    string: a V1 entry written with a V2 type (lim0606/caffe-googlenet-bn's deploy ends with
    one), which no caffe.proto parses, since V1's type is an enum."""
    found: list[tuple[int, int]] = []
    pending: tuple[int, int] | None = None  # a top-level "layers" keyword awaiting its "{"
    current: tuple[int, int] | None = None  # the open top-level "layers" block
    last_ident = ""
    for kind, match, line, depth in _tokens(text):
        if kind == "open":
            if depth == 0:
                current = pending
            pending, last_ident = None, ""
        elif kind == "close":
            if depth == 0:
                current = None
            last_ident = ""
        elif kind == "ident":
            top = depth == 0 and match.group() == "layers"
            pending = (match.start(), line) if top else None
            last_ident = match.group() if depth == 1 else ""
        elif kind == "string":
            typed = current is not None and depth == 1 and last_ident == "type"
            if typed and (not found or found[-1] != current):
                found.append(current)
            last_ident = ""
    return found


def check_text_size(size: int, path: str, expected: str = "prototxt") -> None:
    """Refuse a net definition of ``size`` bytes over ``MAX_PROTOTXT_BYTES`` (or its override),
    wherever the text comes from: a file, or the metadata of a torch-weights file."""
    limit = _limit("CAFFE_COMPAT_MAX_PROTOTXT_BYTES", MAX_PROTOTXT_BYTES)
    if size > limit:
        raise PrototxtError(
            f"the {expected} is {size:,} bytes, over the limit of {limit:,} (published nets are "
            "under 1 MB); set CAFFE_COMPAT_MAX_PROTOTXT_BYTES to read it anyway",
            path=path,
        )


def read_text(path: str | os.PathLike[str], expected: str = "prototxt") -> str:
    """Read a text file strictly as UTF-8, diagnosing binary or downloaded-page content.

    The first few KiB are sniffed before anything else (the size limit included), so a
    multi-gigabyte caffemodel passed as the prototxt gets the swapped-arguments answer, whatever
    its size, without being loaded.
    """
    fd, size = open_regular(path)
    try:
        with os.fdopen(fd, "rb") as handle:
            head = handle.read(4096)
            kind = sniff(head)
            problem = explain(kind, head, f"text {expected}")
            if problem is None and kind in (Kind.BINARY, Kind.HDF5):
                problem = (
                    f"this is a binary file, not a text {expected}: did you swap the prototxt "
                    "and the weights arguments?"
                )
            if problem:
                raise FileFormatError(problem, path=str(path))
            check_text_size(size, str(path), expected)
            raw = head + handle.read()
    except OSError as exc:
        raise FileFormatError(f"cannot read: {exc.strerror}", path=str(path)) from None
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark (Windows editors) is not content
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FileFormatError(
            f"not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
            "re-save the file as UTF-8",
            path=str(path),
            line=line,
        ) from None


class _RecordingParser(text_format._Parser):  # protobuf's parser: its hook for skipped fields
    """protobuf's text parser, noting each field it skips: a fork's field changes what a layer
    computes, so skipping one is reported, never silent."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.skipped: list[tuple[int, str]] = []
        self._depth = 0  # inside a skipped field, its own fields are not noted again

    def _SkipFieldContents(self, tokenizer, field_name, immediate_message_type):
        if not self._depth:
            line = tokenizer._line + 1
            self.skipped.append((line, f"{immediate_message_type}.{field_name}"))
        self._depth += 1
        try:
            return super()._SkipFieldContents(tokenizer, field_name, immediate_message_type)
        finally:
            self._depth -= 1


def parse_text(
    text: str,
    message: Message,
    *,
    path: str = "<text>",
    allow_unknown_fields: bool = False,
) -> LineIndex:
    """Merge ``text`` into ``message``; return the layer line index. Errors are one line."""
    check_text_size(len(text.encode("utf-8", "replace")), path)  # text from anywhere
    index = index_layers(text)
    limit = _limit("CAFFE_COMPAT_MAX_LAYERS", MAX_LAYERS)
    if len(index.starts) > limit:
        raise PrototxtError(
            f"{len(index.starts):,} layers, over the limit of {limit:,}; set "
            "CAFFE_COMPAT_MAX_LAYERS to read it anyway",
            path=path,
        )
    try:
        if allow_unknown_fields:
            parser = _RecordingParser(allow_unknown_field=True)
            parser.MergeLines(text.split("\n"), message)
            index.skipped = parser.skipped
        else:
            text_format.Merge(text, message)
    except text_format.ParseError as exc:
        line = exc.GetLine() if hasattr(exc, "GetLine") else None
        reason = re.sub(r"^\d+:\d+\s*:\s*", "", str(exc)).rstrip(".")
        reason = reason.replace('Message type "caffe.', 'message "caffe.')
        remedy = None
        if "has no field named" in reason:
            reason += " (a field from a Caffe fork?)"
            remedy = Remedy("allow_unknown_fields", purpose="to skip such fields")
        elif re.search(r'V1LayerParameter\.LayerType" has no value named "', reason):
            entries = v1_string_types(text)
            if allow_unknown_fields and entries:
                return _as_v2_entries(text, entries, message, path)
            reason += (
                " (a V1 `layers` entry takes an enum type such as SOFTMAX, a V2 `layer` a "
                "string; BVLC Caffe's parser refuses this file too: write `layer` here)"
            )
            remedy = Remedy("allow_unknown_fields", purpose="to read such entries as `layer`")
        layer = index.layer_at(line) if line else None
        raise PrototxtError(
            reason, path=path, line=line, layer=layer or None, remedy=remedy
        ) from None
    except RecursionError:
        raise PrototxtError("messages nested too deeply to parse", path=path) from None
    return index


def _as_v2_entries(
    text: str, entries: list[tuple[int, int]], message: Message, path: str
) -> LineIndex:
    """``text`` parsed with each V1 ``layers`` entry that has a V2 type string read as a V2
    ``layer`` (what its author meant; Caffe refuses the file), each named in the report."""
    for offset, _ in reversed(entries):
        text = text[:offset] + "layer" + text[offset + len("layers") :]
    message.Clear()
    index = parse_text(text, message, path=path, allow_unknown_fields=True)
    index.repaired = [
        (
            line,
            "a V1 `layers` entry with a V2 type string, read as a V2 `layer` (Caffe "
            "refuses the file)",
        )
        for _, line in entries
    ]
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
