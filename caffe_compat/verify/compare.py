"""Blob-by-blob comparison with one tolerance rule, and the report verify prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..printable import printable


@dataclass(frozen=True)
class Tolerance:
    """A blob passes when max|ours - ref| <= max(rtol * max|ref|, atol).

    With the defaults a softmax (max|ref| <= 1) must agree within 1e-4 and logits within
    1e-4 x max|logits|: the margin fp32 summation order leaves between correct implementations
    (real Caffe and OpenCV differ by up to 7.4e-5 on the Levi-Hassner softmax).
    """

    rtol: float = 1e-4
    atol: float = 1e-4

    def limit(self, reference: np.ndarray) -> float:
        largest = max(np.max(reference, initial=0.0), -np.min(reference, initial=0.0))
        return max(self.rtol * float(largest), self.atol)


@dataclass
class Comparison:
    value: str
    blob: str
    backend: str
    reference: str
    max_abs: float
    max_ref: float
    limit: float
    passed: bool
    note: str = ""

    @property
    def max_rel(self) -> float:
        return self.max_abs / self.max_ref if self.max_ref else float(self.max_abs > 0)


@dataclass
class ArgmaxAgreement:
    output: str
    backend: str
    reference: str
    agree: int
    total: int

    @property
    def passed(self) -> bool:
        return self.agree == self.total


@dataclass
class Report:
    """Everything verify found; ``passed`` is what the exit code reports."""

    inputs: str
    batch: int
    backends: dict[str, str] = field(default_factory=dict)  # name -> "ran" or why skipped
    references: dict[str, str] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    argmax: list[ArgmaxAgreement] = field(default_factory=list)
    skipped_values: dict[str, str] = field(default_factory=dict)
    distinct_classes: dict[str, int] = field(default_factory=dict)
    # judge or back end -> {"prototxt"/"weights"/"arrays"/"onnx": identity record or None}
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Fork fields skipped (allow_unknown_fields) and fork meanings settled (ir/load.fork_notes).
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            bool(self.comparisons)
            and all(c.passed for c in self.comparisons)
            and all(a.passed for a in self.argmax)
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for row, comp in zip(out["comparisons"], self.comparisons):
            row["max_rel"] = comp.max_rel
        out["passed"] = self.passed
        return out

    def worst(self) -> dict[tuple[str, str], Comparison]:
        """The largest error per (backend, blob) pair across references."""
        best: dict[tuple[str, str], Comparison] = {}
        for comp in self.comparisons:
            key = (comp.backend, comp.value)
            if key not in best or comp.max_rel > best[key].max_rel:
                best[key] = comp
        return best

    def render(self, *, all_rows: bool = True) -> str:
        lines = [f"inputs      {self.inputs} (batch {self.batch})"]
        for name, status in {**self.references, **self.backends}.items():
            lines.append(f"{name:<11} {status}")
        lines.extend(_render_sources(self.sources))
        rows = [("blob", "backend", "reference", "max abs", "max rel", "limit", "")]
        shown = self.comparisons if all_rows else [c for c in self.comparisons if not c.passed]
        for c in shown:
            cells = (c.value, c.backend, c.reference, f"{c.max_abs:.3g}", f"{c.max_rel:.3g}")
            rows.append((*map(printable, cells), f"{c.limit:.3g}", "ok" if c.passed else "FAIL"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines.extend("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)
        for a in self.argmax:
            state = "ok" if a.passed else "FAIL"
            lines.append(
                f"argmax {a.output}: {a.backend} vs {a.reference}: "
                f"{a.agree}/{a.total} agree {state}"
            )
        for output, count in self.distinct_classes.items():
            lines.append(f"variety     {output}: {count} distinct argmax classes over the batch")
        for value, why in self.skipped_values.items():
            lines.append(f"not compared {value}: {why}")
        lines.extend(f"note        {note}" for note in self.notes)
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(map(printable, lines))  # blob names come from files: escaped


def _render_sources(sources: dict[str, dict[str, Any]]) -> list[str]:
    """``read by opencv: prototxt deploy.prototxt sha256 1a2b3c4d5e6f (2,311 bytes, ...)``."""
    lines = []
    for reader, files in sources.items():
        for kind, record in files.items():
            head = f"read by {reader}:"
            if record is None:
                lines.append(f"{head:<21} {kind} from memory (no file)")
                continue
            note = f", {record['note']}" if record.get("note") else ""
            lines.append(
                f"{head:<21} {kind} {record['path']} sha256 {record['sha256'][:12]} "
                f"({record['size']:,} bytes{note})"
            )
    return lines


def compare(
    value: str,
    blob: str,
    ours: np.ndarray,
    reference: np.ndarray,
    backend: str,
    reference_name: str,
    tolerance: Tolerance,
) -> Comparison:
    """One row of the table; a shape mismatch fails with a note. The difference is taken in
    float64 in one scratch array (no float64 copies of either side: a large blob must not cost
    four times its size here)."""
    ours, reference = np.asarray(ours), np.asarray(reference)
    if ours.shape != reference.shape:
        if ours.size == reference.size:
            reference = reference.reshape(ours.shape)
        else:
            return Comparison(
                value,
                blob,
                backend,
                reference_name,
                float("inf"),
                0.0,
                0.0,
                False,
                f"shape {list(ours.shape)} vs reference {list(reference.shape)}",
            )
    scratch = np.asarray(np.subtract(ours, reference, dtype=np.float64))  # 0-d too
    diff = float(np.max(np.abs(scratch, out=scratch), initial=0.0))
    del scratch
    if not np.all(np.isfinite(ours)):
        diff = float("inf")
    limit = tolerance.limit(reference)
    max_ref = float(max(np.max(reference, initial=0.0), -np.min(reference, initial=0.0)))
    return Comparison(value, blob, backend, reference_name, diff, max_ref, limit, diff <= limit)
