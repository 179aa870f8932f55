"""Conversions cached by the source files' identities, so a second read costs a load.

Layout: ``<cache home>/dnn/<weights stem>.<key>.onnx`` and a ``.json`` beside it. The key hashes
both sources' size and SHA-256 (:func:`caffe_compat.io.identity.file_identity`, computed on every
call, so edited files get a new entry) with the cache format and caffe-compat version. The JSON
holds the names the wrapper needs, the sources' identities and a SHA-256 over the JSON body and the
ONNX bytes; an entry is used only when that hash matches what is on disk, so a truncated,
corrupted or edited entry is rebuilt, never trusted by its name. Both files are written atomically
(ONNX first, then the JSON that vouches for it) with the umask's permissions. A cache that cannot
be written (read-only home) only costs the conversion each time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from .. import __version__
from ..io.atomic import atomic_output
from ..io.identity import Identity, file_identity
from .model import Converted, convert
from .names import NetNames

FORMAT = 1
SUBFOLDER = "dnn"


def cache_folder() -> Path:
    """``<cache home>/dnn``: $CAFFE_COMPAT_HOME or ~/.cache/caffe-compat."""
    from ..app.pretrained import cache_home

    return cache_home() / SUBFOLDER


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _source(identity: Identity) -> dict[str, Any]:
    return {"size": identity.size, "sha256": identity.sha256}


def entry_stem(prototxt: Identity, weights: Identity, weights_path: Path) -> str:
    """File name (without extension) of the entry for these sources."""
    key = hashlib.sha256(
        _canonical(
            {
                "format": FORMAT,
                "caffe_compat": __version__,
                "prototxt": _source(prototxt),
                "weights": _source(weights),
            }
        )
    ).hexdigest()[:32]
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", weights_path.stem)[:60] or "net"
    return f"{readable}.{key}"


def _digest(body: dict[str, Any], onnx: bytes) -> str:
    return hashlib.sha256(_canonical(body) + onnx).hexdigest()


def load_entry(folder: Path, stem: str) -> Converted | None:
    """The verified entry, or None when it is absent, unreadable or fails its hash."""
    try:
        record = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
        body, expected = record["body"], record["sha256"]
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            return None
        onnx_path = folder / f"{stem}.onnx"
        if onnx_path.stat().st_size != body.get("onnx_size"):
            return None
        onnx = onnx_path.read_bytes()
        if _digest(body, onnx) != expected:
            return None
        return Converted(onnx, NetNames.from_json(body["names"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_entry(
    folder: Path, stem: str, converted: Converted, sources: dict[str, Identity]
) -> None:
    body = {
        "format": FORMAT,
        "caffe_compat": __version__,
        "sources": {role: _source(identity) for role, identity in sources.items()},
        "onnx_size": len(converted.onnx),
        "names": converted.names.to_json(),
    }
    record = {"body": body, "sha256": _digest(body, converted.onnx)}
    with atomic_output(folder / f"{stem}.onnx") as tmp:
        tmp.write_bytes(converted.onnx)
    with atomic_output(folder / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")


def cached_conversion(
    prototxt: str | os.PathLike[str], weights: str | os.PathLike[str]
) -> tuple[Converted, bool]:
    """The ONNX conversion of the two files and whether it came from the cache."""
    ids = {"prototxt": file_identity(prototxt), "weights": file_identity(weights)}
    folder = cache_folder()
    stem = entry_stem(ids["prototxt"], ids["weights"], Path(weights))
    found = load_entry(folder, stem)
    if found is not None:
        return found, True
    converted = convert(prototxt, weights)
    try:
        store_entry(folder, stem, converted, ids)
    except OSError as exc:
        warnings.warn(
            f"caffe_compat.dnn: could not cache the conversion in {folder} ({exc})",
            RuntimeWarning,
            stacklevel=4,
        )
    return converted, False
