"""The one exception tree every reader, converter and command raises.

Each error carries what a user needs to find the problem (file, layer, blob) and renders as a
single line, so the CLI can print ``str(error)`` and exit 2 without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CaffeCompatError(Exception):
    """Base class: ``str()`` is one line naming the file, the layer, the blob and the problem."""

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        layer: str | None = None,
        layer_type: str | None = None,
        blob: str | None = None,
        line: int | None = None,
    ) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        self.layer = layer
        self.layer_type = layer_type
        self.blob = blob
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where: list[str] = []
        if self.path:
            where.append(f"{self.path}:{self.line}" if self.line else self.path)
        if self.layer is not None:
            kind = f" ({self.layer_type})" if self.layer_type else ""
            where.append(f'layer "{self.layer}"{kind}')
        if self.blob is not None:
            where.append(f"blob {self.blob}")
        prefix = ": ".join(where)
        text = f"{prefix}: {self.reason}" if prefix else self.reason
        return " ".join(text.split())  # one line, whatever the reason held

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
        }


class FileFormatError(CaffeCompatError):
    """A file is not what it should be: wrong kind, truncated, corrupt, or undecodable text."""


class PrototxtError(FileFormatError):
    """The text of a net definition does not parse against caffe.proto."""


class BlobError(FileFormatError):
    """A parameter blob's declared shape and its data disagree, or it cannot be decoded."""


class NetDefinitionError(CaffeCompatError):
    """The net is well-formed protobuf but not a valid Caffe net (wiring, shapes, parameters)."""


class MemoryBudgetError(CaffeCompatError):
    """A step would allocate more than the memory budget allows (``--max-memory``/``max_memory=``);
    raised before the allocation, never after."""


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
