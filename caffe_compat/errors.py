"""The one exception tree every reader, converter and command raises.

Each error carries what a user needs to find the problem (file, layer, blob) and renders as a
single line, so the CLI can print ``str(error)`` and exit 2 without a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .printable import printable


@dataclass(frozen=True)
class Remedy:
    """An option that fixes the problem, named symbolically so each layer words it its own way:
    ``str(error)`` in the Python API's terms (``download=True``), the CLI in its flags
    (``--download``). ``option`` keys :data:`API_WORDING`; ``value`` fills its ``{value}``."""

    option: str
    value: str = ""
    purpose: str = ""  # e.g. "to download and verify it"


MAX_LINE = 2000  # characters of an error line; the rest is cut (to_dict keeps the whole reason)

# How the Python API spells each remedy (the CLI has its own table, cli/_common.py).
API_WORDING: dict[str, str] = {
    "download": "download=True",
    "force": "force=True",
    "input_shapes": "input_shapes={{'{value}': (N, C, H, W)}}",
    "input_shapes_or_typical": (
        "input_shapes={{'{value}': (N, C, H, W)}} (or typical_input_shapes=True)"
    ),
    "stages": "stages=[NAME] (and phase='TRAIN' or 'TEST')",
    "allow_unknown_fields": "allow_unknown_fields=True",
    "backend": "backend='{value}'",
    "reference": "reference_path=REF.npz",
    "labels": "{value}_labels=[...]",
    "verify_identity": "verify_identity=False",
    "max_memory": "max_memory='2G' (a size)",
}


class CaffeCompatError(Exception):
    """Base class: ``str()`` is one line naming the file, the layer, the blob and the problem.

    Names come from files people receive, so ``str()`` escapes control and formatting
    characters (``\\x1b``): printing an error can never drive the terminal.
    ``remedy`` (optional) names the option that fixes it; ``render(wording)`` words it for a
    caller other than the Python API (the CLI passes its flag names)."""

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        layer: str | None = None,
        layer_type: str | None = None,
        blob: str | None = None,
        line: int | None = None,
        remedy: Remedy | None = None,
    ) -> None:
        self.reason = reason
        self.remedy = remedy
        self.path = None if path is None else str(path)
        self.layer = layer
        self.layer_type = layer_type
        self.blob = blob
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return self.render(API_WORDING)

    def render(self, wording: Mapping[str, str]) -> str:
        """One line, the remedy (if any) spelled with ``wording[option]``."""
        where: list[str] = []
        if self.path:
            path = printable(self.path)
            where.append(f"{path}:{self.line}" if self.line else path)
        if self.layer is not None:
            kind = f" ({printable(self.layer_type)})" if self.layer_type else ""
            where.append(f'layer "{printable(self.layer)}"{kind}')
        if self.blob is not None:
            where.append(f"blob {printable(str(self.blob))}")
        prefix = ": ".join(where)
        text = f"{prefix}: {self.reason}" if prefix else self.reason
        remedy = getattr(self, "remedy", None)  # set before Exception.__init__ calls str()
        if remedy is not None:
            option = wording.get(remedy.option, remedy.option).format(value=remedy.value)
            purpose = remedy.purpose.format(value=remedy.value)
            text += f"; pass {option}" + (f" {purpose}" if purpose else "")
        text = printable(" ".join(text.split()))  # one line, whatever the reason held
        if len(text) > MAX_LINE:  # a file can make any part of a message huge
            text = f"{text[:MAX_LINE]}... ({len(text) - MAX_LINE:,} more characters)"
        return text

    def to_dict(self) -> dict[str, object]:
        """Machine-readable form for ``--json`` output."""
        return {
            "error": type(self).__name__,
            "reason": self.reason,
            "path": self.path,
            "layer": self.layer,
            "type": self.layer_type,
            "blob": self.blob,
            "line": self.line,
            "remedy": None
            if self.remedy is None
            else {"option": self.remedy.option, "value": self.remedy.value},
        }


class MissingFileError(CaffeCompatError):
    """A file the caller must provide is absent: ``expected_path`` is exactly where it belongs,
    ``file`` its name and ``sources`` where to get it (URLs or pages)."""

    def __init__(
        self,
        reason: str,
        *,
        file: str,
        expected_path: str,
        sources: Sequence[str] = (),
        remedy: Remedy | None = None,
    ) -> None:
        self.file = file
        self.expected_path = str(expected_path)
        self.sources = list(sources)
        super().__init__(reason, path=self.expected_path, remedy=remedy)

    def to_dict(self) -> dict[str, object]:
        out = super().to_dict()
        out.update(file=self.file, expected_path=self.expected_path, sources=self.sources)
        return out


class FileFormatError(CaffeCompatError):
    """A file is not what it should be: wrong kind, truncated, corrupt, or undecodable text."""


class PrototxtError(FileFormatError):
    """The text of a net definition does not parse against caffe.proto."""


class BlobError(FileFormatError):
    """A parameter blob's declared shape and its data disagree, or it cannot be decoded."""


class NetDefinitionError(CaffeCompatError):
    """The net is well-formed protobuf but not a valid Caffe net (wiring, shapes, parameters)."""


class SolverDefinitionError(CaffeCompatError):
    """A solver definition (or a solver state) Caffe would refuse: unknown type or policy,
    settings its CHECKs reject, a state that does not fit the net."""


class MemoryBudgetError(CaffeCompatError):
    """A step would allocate more than the memory budget allows; raised before the allocation,
    never after."""


class WeightsMismatchError(CaffeCompatError):
    """Weights and net definition disagree (missing layers, wrong shapes, wrong blob counts)."""


@dataclass(frozen=True)
class UnsupportedLayer:
    """One layer that some back end cannot convert."""

    name: str
    layer_type: str
    backend: str
    detail: str = ""


class UnsupportedLayersError(CaffeCompatError):
    """Every unsupported layer of a net, found in one pass before any work is done."""

    def __init__(self, missing: Sequence[UnsupportedLayer], *, path: str | None = None) -> None:
        self.missing = list(missing)
        by_type: dict[str, list[str]] = {}
        for item in self.missing:
            label = f"{item.layer_type} [{item.backend}]"
            if item.detail:
                label = f"{item.layer_type} [{item.backend}: {item.detail}]"
            by_type.setdefault(label, []).append(item.name)
        parts = [f"{label}: {', '.join(names)}" for label, names in by_type.items()]
        reason = f"{len(self.missing)} unsupported layer(s): " + "; ".join(parts)
        super().__init__(reason, path=path)

    def to_dict(self) -> dict[str, object]:
        out = super().to_dict()
        out["unsupported"] = [
            {"name": m.name, "type": m.layer_type, "backend": m.backend, "detail": m.detail}
            for m in self.missing
        ]
        return out


_DISK_FULL_WORDS = ("no space left on device", "not enough free space", "disk quota exceeded")


def disk_full(exc: BaseException) -> CaffeCompatError | None:
    """The line for an exception that says the disk is full (ENOSPC, EDQUOT, numpy's "not
    enough free space"), or None: a full disk is the machine's state, not a bug of ours."""
    import errno

    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.ENOSPC, errno.EDQUOT) or any(w in text.lower() for w in _DISK_FULL_WORDS):
        where = getattr(exc, "filename", None)
        first = (text.strip().splitlines() or [type(exc).__name__])[0]
        return CaffeCompatError(
            f"the disk is full ({first}); free some space, or set TMPDIR to a larger disk for "
            "temporary files",
            path=where if isinstance(where, str) else None,
        )
    return None
