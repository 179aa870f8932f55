"""What each converted file records about its source, read back without running anything.

Every output of one ``convert`` carries the same record: the converter, the identities (size,
SHA-256, git blob id) of the prototxt and the weights, and a conversion id shared by the files
written together. So an ``.onnx`` beside a ``.pt2`` made from other weights (a run killed between
the two writes, a file copied from elsewhere) is detectable: their records differ. ONNX keeps it
in ``metadata_props``, the ``.pt2`` archive in ``extra/caffe_compat.json`` (read with zipfile,
not ``torch.export.load``, which unpickles), torch-weights in its safetensors metadata.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import CaffeCompatError, FileFormatError

KEYS = ("converter", "source_prototxt", "source_weights", "conversion")
PT2_ENTRY = "caffe_compat.json"  # torch.export.save(extra_files=...) stores it as <name>/extra/...
_PT2_MEMBER = re.compile(rf"[^/]+/extra/{re.escape(PT2_ENTRY)}")
_MAX_RECORD = 1 << 20


def _onnx(path: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        reason = f"not a readable ONNX file ({type(exc).__name__})"
        raise FileFormatError(reason, path=str(path)) from None
    return {p.key: p.value for p in model.metadata_props}


def _pt2(path: Path) -> dict[str, str]:
    try:
        with zipfile.ZipFile(path) as archive:
            found = [i for i in archive.infolist() if _PT2_MEMBER.fullmatch(i.filename)]
            if not found:
                return {}
            if found[0].file_size > _MAX_RECORD:
                raise FileFormatError(f"{found[0].filename} is too large", path=str(path))
            with archive.open(found[0]) as handle:
                record = json.loads(handle.read(_MAX_RECORD + 1))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FileFormatError(f"not a readable .pt2 archive ({exc})", path=str(path)) from None
    if not isinstance(record, dict):
        raise FileFormatError(f"{PT2_ENTRY} is not a JSON object", path=str(path))
    return {str(k): str(v) for k, v in record.items()}


def _safetensors(path: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise FileFormatError(f"not a readable safetensors file ({exc})", path=str(path)) from None


_READERS = {".onnx": _onnx, ".pt2": _pt2, ".safetensors": _safetensors}


def read_provenance(path: str | os.PathLike[str]) -> dict[str, str]:
    """The source record of a converted file (``KEYS`` it has; empty when it has none)."""
    path = Path(path)
    reader = _READERS.get(path.suffix)
    if reader is None:
        raise CaffeCompatError(
            f"no provenance record in {path.suffix or 'extension-less'} files (known: "
            f"{', '.join(_READERS)})",
            path=str(path),
        )
    record = reader(path)
    return {k: record[k] for k in KEYS if k in record}


def check_same_source(paths: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
    """The common record of files meant to be one conversion's outputs; a one-line error when
    any lacks a record or their sources differ."""
    records = {str(p): read_provenance(p) for p in paths}
    for name, record in records.items():
        if "conversion" not in record:
            raise CaffeCompatError("has no caffe-compat source record", path=name)
    first_name, first = next(iter(records.items()))
    for name, record in records.items():
        if record != first:
            differ = [k for k in KEYS if record.get(k) != first.get(k)]
            raise CaffeCompatError(
                f"not from the same conversion as {first_name}: {', '.join(differ)} differ "
                f"({record.get(differ[0])!r} vs {first.get(differ[0])!r})",
                path=name,
            )
    return first
