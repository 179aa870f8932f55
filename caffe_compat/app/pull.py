"""A zoo model's files made ready step by step (download, identity check, conversion, cache), and
what the cache holds for every model. Used by ``caffe-compat pull`` and ``caffe-compat zoo``.

Each step reports one line through ``report``; any failure is one ``CaffeCompatError`` line. When
a file cannot be downloaded (``offline``, no direct source, or every source failed) the line names
the file, the exact path to put it at and where to get it, so a copy fetched by other means drops
straight into place. A file already in the cache is identity-checked, never replaced, unless
``force`` asks for a fresh download (which replaces it only once the new copy is verified).
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CaffeCompatError
from ..io import read_weights
from ..io.identity import Identity, file_identity
from ..ir.load import load_net
from ..zoo import FileSpec, ModelCard, load_card
from .download import fetch_spec_from
from .pretrained import (
    CACHE_FORMAT,
    _cache_path,  # the conversion cache's layout is pretrained's: one definition
    _load_cache,
    _save_cache,
    check_identity,
    model_folder,
)

Report = Callable[[str], None]
_CACHE_ENTRY = re.compile(r"\.[0-9a-f]{40}\.npz")


@dataclass(frozen=True)
class Pulled:
    """Where a pulled model's files are, and the weights' identity."""

    card: ModelCard
    weights: Path
    identity: Identity
    cache: Path
    mean: Path | None  # None when the card has no mean file or it could not be had


def _where(spec: FileSpec) -> str:
    return "; ".join(source.describe() for source in spec.sources) or "no source recorded"


def _missing(card: ModelCard, spec: FileSpec, path: Path, why: str) -> CaffeCompatError:
    return CaffeCompatError(
        f'{spec.file} for "{card.name}" {why}: put it at exactly {path} (get it from '
        f"{_where(spec)}), then run caffe-compat pull {card.name} again"
    )


def _fetch(
    card: ModelCard, spec: FileSpec, folder: Path, *, force: bool, offline: bool, progress: bool
) -> tuple[Path, Identity | None, str]:
    """The file in the cache (downloaded if needed and allowed) and the line saying how."""
    path = folder / spec.file
    if path.is_file() and not force:
        return path, None, f"found {path} ({path.stat().st_size:,} bytes)"
    if offline:
        raise _missing(card, spec, path, "is not in the cache and --offline forbids downloading")
    if not any(source.downloadable for source in spec.sources):
        raise _missing(card, spec, path, "has no direct download (only a web page lists it)")
    try:
        identity, source = fetch_spec_from(spec, folder, progress=progress)
    except CaffeCompatError as exc:
        raise _missing(card, spec, path, f"could not be downloaded ({exc.reason})") from None
    return path, identity, f"downloaded {path} from {source.url} ({identity.size:,} bytes)"


def _identity_line(spec: FileSpec, identity: Identity) -> str:
    checked = spec.identities()
    if not checked:
        return (
            f"no published identity to check (see the card's identity_note); this copy has "
            f"sha256 {identity.sha256}, sha1 {identity.sha1}"
        )
    kinds = ", ".join(f"{kind.replace('_', ' ')} {value}" for kind, value in checked)
    source = f" (published in {spec.identity_source})" if spec.identity_source else ""
    return f"{spec.file} matches {kinds}{source}"


def _output_shape(loaded) -> str:
    graph = loaded.graph
    shapes = [f"{graph.blob_of.get(v, v)} {list(graph.shapes[v])}" for v in graph.outputs]
    return ", ".join(shapes)


def pull(
    name: str | ModelCard,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    offline: bool = False,
    progress: bool = True,
    report: Report = print,
) -> Pulled:
    """Download (unless cached, or ``offline``), identity-check, convert and cache a zoo model's
    weights, then its mean file when the card has one; one ``report`` line per step."""
    card = name if isinstance(name, ModelCard) else load_card(name)
    folder = model_folder(card, cache_dir)
    spec = card.weights
    path, identity, line = _fetch(
        card, spec, folder, force=force, offline=offline, progress=progress
    )
    report(f"weights: {line}")
    if identity is None:
        identity = file_identity(path)
    check_identity(card, spec, path, identity)
    report(f"identity: {_identity_line(spec, identity)}")

    target = _cache_path(path, identity)
    cached = None if force else _load_cache(target, path, identity)
    weights = cached if cached is not None else read_weights(path)
    loaded = load_net(card.prototxt_path(), weights)  # every blob checked against the net
    layers = [node for node in loaded.graph.nodes if node.blobs]
    count = sum(blob.size for node in layers for blob in node.blobs)
    origin = "the conversion cache" if cached is not None else f"{weights.format} weights"
    report(
        f"convert: {len(layers)} layers, {count:,} parameters from {origin} into "
        f"{card.prototxt_path().name}; output {_output_shape(loaded)}"
    )
    if cached is None:
        _save_cache(target, weights, identity)
        report(f"cache: wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    else:
        report(f"cache: up to date, {target}")

    mean_path = None
    if card.mean is not None:
        try:
            mean_path, mean_identity, line = _fetch(
                card, card.mean, folder, force=force, offline=offline, progress=progress
            )
        except CaffeCompatError as exc:  # the weights are ready; say how to add the mean
            report(f"mean: not in the cache: {exc.reason}")
        else:
            check_identity(card, card.mean, mean_path, mean_identity or file_identity(mean_path))
            report(f"mean: {line}")
    report(f"ready: {card.name} in {folder}")
    return Pulled(card, path, identity, target, mean_path)


@dataclass(frozen=True)
class ModelState:
    """What the cache holds for one model (no hashing: cheap enough to list the whole zoo)."""

    card: ModelCard
    weights: Path
    cached: bool  # the weights file is there (identity checked on load and by pull)
    converted: bool  # a conversion cache entry made from a file of the same size is there
    size: int  # bytes: the cached file's, else the card's, else estimated
    size_kind: str  # "file", "card" or "estimate" (float32 parameters of the deploy net)

    def as_dict(self) -> dict[str, object]:
        card = self.card
        return {
            "name": card.name,
            "title": card.title,
            "task": card.task,
            "labels": len(card.labels),
            "output": card.output,
            "weights_file": card.weights.file,
            "path": str(self.weights),
            "size": self.size,
            "size_kind": self.size_kind,
            "cached": self.cached,
            "converted": self.converted,
            "identity": dict(card.weights.identities()),
            "identity_note": card.weights.identity_note,
            "sources": [source.url for source in card.weights.sources],
        }


def estimated_size(card: ModelCard) -> int:
    """Bytes of the deploy net's parameters as float32: a lower bound on the caffemodel's size
    (a release may also hold training-only layers, e.g. GoogLeNet's auxiliary classifiers)."""
    loaded = load_net(card.prototxt_path())
    return 4 * sum(math.prod(s) for shapes in loaded.inference.params.values() for s in shapes)


def _converted(weights: Path, size: int) -> bool:
    folder = weights.parent / "converted"
    if not folder.is_dir():
        return False
    for entry in folder.glob(f"{weights.stem}.*.npz"):
        if not _CACHE_ENTRY.fullmatch(entry.name[len(weights.stem) :]):
            continue
        try:
            with np.load(entry, allow_pickle=False) as data:
                manifest = json.loads(str(data["manifest"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            continue
        if manifest.get("format") == CACHE_FORMAT and manifest.get("size") == size:
            return True
    return False


def model_state(
    name: str | ModelCard, cache_dir: str | os.PathLike[str] | None = None
) -> ModelState:
    card = name if isinstance(name, ModelCard) else load_card(name)
    weights = model_folder(card, cache_dir) / card.weights.file
    if weights.is_file():
        size = weights.stat().st_size
        return ModelState(card, weights, True, _converted(weights, size), size, "file")
    if card.weights.size is not None:
        return ModelState(card, weights, False, False, card.weights.size, "card")
    return ModelState(card, weights, False, False, estimated_size(card), "estimate")
