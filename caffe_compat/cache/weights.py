"""A zoo model's parsed weights as a cache entry: a second load costs a read, not a parse.

The payload is the arrays' raw little-endian bytes, each at a 64-byte aligned offset; the signed
record's ``meta`` lists, per layer, each array's dtype, shape and offset. No pickle and no
archive format: nothing in an entry can run code, the layout does not depend on torch or on
this package's module layout (the model is rebuilt from the same arrays by the same code as a
fresh conversion, so outputs are bit-identical), and loading is one read: the arrays are views
of the payload, each checked to lie inside it before it is made, so no number in an entry sizes
an allocation. Entries live in ``<home>/<model>/converted/``; making one removes the entries of
weights that are no longer there (and the ``.npz`` files of the former layout).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..io import read_weights
from ..io.identity import Identity
from ..io.weights import Weights
from ..printable import printable
from .entries import (
    DAMAGE,
    Entry,
    load_entry,
    make_entry,
    prune,
    readable_name,
    reject,
    signed_body,
    store_or_warn,
)
from .home import UnsafeCacheError

KIND = "caffe-weights"
SUFFIX = ".bin"
CONVERTED = "converted"
DTYPES = ("<f4", "<f8", "<f2")
MAX_DIMS = 32
_ALIGN = 64
_FORMER = re.compile(r"[0-9a-f]{40}\.npz(\.sha256)?")  # <stem>.<git blob>.npz and its hash
log = logging.getLogger(__package__)


@dataclass(frozen=True)
class CachedWeights:
    weights: Weights
    entry: Path  # the payload file, written or read
    from_cache: bool
    stored: bool  # written by this call


def weights_entry(home: Path, model: str, weights: Path, identity: Identity) -> Entry:
    return make_entry(
        home, (model, CONVERTED), weights.stem, {"weights": identity}, kind=KIND, suffix=SUFFIX
    )


def _little_endian(blob: np.ndarray) -> np.ndarray:
    array = np.asarray(blob, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
    if array.dtype.kind != "f" or array.dtype.itemsize not in (2, 4, 8):
        raise ValueError(f"cannot cache {array.dtype} arrays")
    return array.astype(f"<f{array.dtype.itemsize}", copy=False)


def _plan(weights: Weights) -> tuple[list[tuple[int, np.ndarray]], dict[str, Any]]:
    """Where each array goes in the payload, and the manifest saying so."""
    placed: list[tuple[int, np.ndarray]] = []
    layers = []
    offset = 0
    for name, blobs in weights.blobs.items():
        items = []
        for blob in blobs:
            array = _little_endian(blob)
            offset = -(-offset // _ALIGN) * _ALIGN
            items.append([array.dtype.str, list(array.shape), offset])
            placed.append((offset, array))
            offset += array.nbytes
        layers.append([name, items])
    meta = {"weights_format": weights.format, "net_name": weights.net_name, "layers": layers}
    return placed, meta


def _writer(placed: list[tuple[int, np.ndarray]]):
    def write(out: BinaryIO) -> None:
        position = 0
        for offset, array in placed:
            out.write(bytes(offset - position))
            if array.size:
                out.write(array.reshape(-1).view(np.uint8).data)
            position = offset + array.nbytes

    return write


def _ints(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise ValueError(f"{what} is not a list of at most {MAX_DIMS} sizes")
    if not all(type(v) is int and v >= 0 for v in value):
        raise ValueError(f"{what} holds something else than sizes")
    return value


def _decode(buffer: bytearray, meta: Any, path: Path) -> Weights:
    """The arrays the manifest lists, as views of ``buffer``; ValueError when any of them does
    not lie inside it (checked with Python integers, before the view is made)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("layers"), list):
        raise ValueError("no layer list")
    if not isinstance(meta.get("weights_format"), str) or not isinstance(meta.get("net_name"), str):
        raise ValueError("no weights format or net name")
    blobs: dict[str, list[np.ndarray]] = {}
    for layer in meta["layers"]:
        if not (isinstance(layer, list) and len(layer) == 2 and isinstance(layer[0], str)):
            raise ValueError("a layer is not [name, arrays]")
        name, items = layer
        if name in blobs or not isinstance(items, list):
            raise ValueError(f"layer {printable(name)!r} is repeated or has no array list")
        arrays = []
        where = f"an array of layer {printable(name)!r}"
        for item in items:
            if not (isinstance(item, list) and len(item) == 3 and item[0] in DTYPES):
                raise ValueError(f"{where} is not [dtype, shape, offset]")
            dtype, shape, offset = np.dtype(item[0]), _ints(item[1], "a shape"), item[2]
            if type(offset) is not int or offset < 0:
                raise ValueError(f"{where} has no offset")
            count = math.prod(shape)
            if offset + count * dtype.itemsize > len(buffer):
                raise ValueError(
                    f"{where} ({count} values at byte {offset}) reaches past the "
                    f"{len(buffer)}-byte payload"
                )
            arrays.append(np.frombuffer(buffer, dtype, count, offset).reshape(tuple(shape)))
        blobs[name] = arrays
    return Weights(
        path=str(path), format=meta["weights_format"], blobs=blobs, net_name=meta["net_name"]
    )


def load_weights(entry: Entry, path: Path, identity: Identity) -> Weights | None:
    """The cached arrays of the weights at ``path`` (of ``identity``), or None (rebuild)."""
    found = load_entry(entry, {"weights": identity})
    if found is None:
        return None
    try:
        return _decode(*found, path)
    except DAMAGE as exc:
        reject(entry, f"has a manifest that does not fit its payload ({printable(str(exc))})")
        return None


def cached_weights(
    home: Path, model: str, path: Path, identity: Identity, *, refresh: bool = False
) -> CachedWeights:
    """The parsed weights at ``path``: from the cache when it holds an entry for exactly these
    bytes (unless ``refresh``), else parsed and cached. A cache that cannot be written costs
    only the next load a parse (one warning)."""
    entry = weights_entry(home, model, path, identity)
    if not refresh:
        cached = load_weights(entry, path, identity)
        if cached is not None:
            log.debug("weights of %s read from the cache entry %s", path.name, entry.payload)
            return CachedWeights(cached, entry.payload, True, False)
    weights = read_weights(path)
    try:
        placed, meta = _plan(weights)
    except ValueError as exc:
        log.warning("not caching the weights of %s: %s", printable(str(path)), exc)
        return CachedWeights(weights, entry.payload, False, False)
    stored = store_or_warn(entry, {"weights": identity}, _writer(placed), meta)
    if stored:
        prune(entry, legacy=_FORMER)
    return CachedWeights(weights, entry.payload, False, stored)


def is_converted(home: Path, model: str, path: Path, size: int) -> bool:
    """Whether a signed entry made from a file of ``size`` bytes is there for the weights at
    ``path``: the records only, nothing hashed (cheap enough to list the whole zoo); a damaged,
    foreign or unsafe entry is simply not converted."""
    folder = home / model / CONVERTED
    readable = readable_name(path.stem)
    try:
        records = sorted(folder.glob(f"{readable}.*.json"))
    except OSError:
        return False
    for record in records:
        entry = Entry(home, (model, CONVERTED), record.name[: -len(".json")], SUFFIX, KIND)
        try:
            body = signed_body(entry)
            if body is None or body.get("kind") != KIND:
                continue
            recorded = body["sources"]["weights"]["size"]
            if recorded == size and entry.payload.stat().st_size == body["payload"]["size"]:
                return True
        except (UnsafeCacheError, *DAMAGE):
            continue
    return False
