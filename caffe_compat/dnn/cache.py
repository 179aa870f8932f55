"""Conversions cached by the source files' identities, so a second read costs a load.

Each conversion is one entry of the package's cache (``caffe_compat.cache``) in
``<cache home>/dnn``: the ONNX bytes as the payload (``<weights stem>.<key>.onnx``) and the names
the wrapper needs in the signed record beside it (``.json``), tied to the size and SHA-256 of
both source files (computed on every call). An entry made from other files (one copied over
this one), edited, truncated or unparsable is rebuilt with one warning, never served. A cache
that cannot be written (read-only home) only costs the conversion each time.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..cache import cache_home, load_entry
from ..cache.entries import DAMAGE, make_entry, reject, store_or_warn
from ..io.identity import file_identity
from .model import Converted, convert
from .names import NetNames

SUBFOLDER = "dnn"
KIND = "onnx-conversion"


def cache_folder() -> Path:
    """``<cache home>/dnn``: $CAFFE_COMPAT_HOME or ~/.cache/caffe-compat."""
    return cache_home() / SUBFOLDER


def cached_conversion(
    prototxt: str | os.PathLike[str], weights: str | os.PathLike[str]
) -> tuple[Converted, bool]:
    """The ONNX conversion of the two files and whether it came from the cache."""
    ids = {"prototxt": file_identity(prototxt), "weights": file_identity(weights)}
    home = cache_home()
    entry = make_entry(home, (SUBFOLDER,), Path(weights).stem, ids, kind=KIND, suffix=".onnx")
    found = load_entry(entry, ids)
    if found is not None:
        onnx, meta = found
        try:
            return Converted(bytes(onnx), NetNames.from_json(meta)), True
        except DAMAGE as exc:
            reject(entry, f"has names that do not parse ({exc})")
    converted = convert(prototxt, weights)
    store_or_warn(entry, ids, lambda out: out.write(converted.onnx), converted.names.to_json())
    return converted, False
