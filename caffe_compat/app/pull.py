"""A zoo model's files made ready step by step (download, identity check, conversion, cache), and
what the cache holds for every model. Used by ``caffe-compat pull`` and ``caffe-compat zoo``.

Each step reports one line through ``report``; any failure is one ``CaffeCompatError`` line. When
a file cannot be downloaded (``offline``, no direct source, or every source failed) the line names
the file, the exact path to put it at and where to get it, so a copy fetched by other means drops
straight into place. A file already in the cache is identity-checked, never replaced, unless
``force`` asks for a fresh download (which replaces it only once the new copy is verified).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..cache import Obtained, cache_home, check_identity, obtain
from ..cache.fetch import model_folder
from ..cache.weights import cached_weights, is_converted
from ..errors import CaffeCompatError
from ..io.identity import Identity
from ..ir.load import load_net
from ..zoo import FileSpec, ModelCard, load_card
from .download import fetch_spec_from

Report = Callable[[str], None]


@dataclass(frozen=True)
class Pulled:
    """Where a pulled model's files are, and the weights' identity."""

    card: ModelCard
    weights: Path
    identity: Identity
    cache: Path
    mean: Path | None  # None when the card has no mean file or it could not be had


def _fetch(
    card: ModelCard, spec: FileSpec, home: Path, *, force: bool, offline: bool, progress: bool
) -> tuple[Obtained, str]:
    """The file in the cache (downloaded if needed and allowed) and the line saying how."""
    fetch = None if offline else functools.partial(fetch_spec_from, progress=progress)
    got = obtain(
        card,
        spec,
        home,
        fetch=fetch,
        force=force,
        verify_identity=False,  # checked by the caller, after the line saying where it came from
        absent="is not in the cache and --offline forbids downloading",
        then=f", then run caffe-compat pull {card.name} again",
    )
    if got.source is None:
        return got, f"found {got.path} ({got.identity.size:,} bytes)"
    url = got.source.url
    return got, f"downloaded {got.path} from {url} ({got.identity.size:,} bytes)"


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
    home = cache_home(cache_dir)
    spec = card.weights
    got, line = _fetch(card, spec, home, force=force, offline=offline, progress=progress)
    report(f"weights: {line}")
    path, identity = got.path, got.identity
    check_identity(card, spec, path, identity)
    report(f"identity: {_identity_line(spec, identity)}")

    cached = cached_weights(home, path.parent.name, path, identity, refresh=force)
    loaded = load_net(card.prototxt_path(), cached.weights)  # every blob checked against the net
    layers = [node for node in loaded.graph.nodes if node.blobs]
    count = sum(blob.size for node in layers for blob in node.blobs)
    origin = "the cache" if cached.from_cache else f"{cached.weights.format} weights"
    report(
        f"convert: {len(layers)} layers, {count:,} parameters from {origin} into "
        f"{card.prototxt_path().name}; output {_output_shape(loaded)}"
    )
    if cached.from_cache:
        report(f"cache: up to date, {cached.entry}")
    elif cached.stored:
        report(f"cache: wrote {cached.entry} ({cached.entry.stat().st_size / 1e6:.1f} MB)")
    else:
        report(f"cache: not written (see the warning); {card.name} is parsed on each load")

    mean_path = None
    if card.mean is not None:
        try:
            mean, line = _fetch(
                card, card.mean, home, force=force, offline=offline, progress=progress
            )
        except CaffeCompatError as exc:  # the weights are ready; say how to add the mean
            report(f"mean: not in the cache: {exc}")
        else:
            check_identity(card, card.mean, mean.path, mean.identity)
            mean_path = mean.path
            report(f"mean: {line}")
    report(f"ready: {card.name} in {path.parent}")
    return Pulled(card, path, identity, cached.entry, mean_path)


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


def model_state(
    name: str | ModelCard, cache_dir: str | os.PathLike[str] | None = None
) -> ModelState:
    card = name if isinstance(name, ModelCard) else load_card(name)
    home = cache_home(cache_dir)
    weights = model_folder(card, home) / card.weights.file
    if weights.is_file():
        size = weights.stat().st_size
        converted = is_converted(home, card.name, weights, size)
        return ModelState(card, weights, True, converted, size, "file")
    if card.weights.size is not None:
        return ModelState(card, weights, False, False, card.weights.size, "card")
    return ModelState(card, weights, False, False, estimated_size(card), "estimate")
