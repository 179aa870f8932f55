"""``load_pretrained("levi_hassner_age")``: a zoo model's released weights as a ready module.

The weights live in a cache folder (argument > ``$CAFFE_COMPAT_HOME`` > ``~/.cache/caffe-compat``),
one sub-folder per model: ``<home>/<model>/<weights file>``. Users may drop the released file
there themselves; ``download=True`` fetches it. Either way the file's identity (every one of git
blob id, SHA-1, SHA-256 and size the card gives) is checked on every load (unless
``verify_identity=False``), so a truncated, swapped or tampered file is never run; hashing 44 MB
costs about 0.1 s. A card whose authors published no identity says so (``identity_note``).

Conversion cache. The first load parses the caffemodel and saves its arrays as
``<home>/<model>/converted/<file stem>.<git blob id>.npz``; later loads read that instead. An
``.npz`` of the raw arrays rather than a pickled torch module or state dict because it
(1) loads with ``allow_pickle=False``, so a cache file can never run code,
(2) does not depend on the torch module's layout or version, so upgrading caffe-compat or torch
never serves a stale module: the module is rebuilt from the same arrays by the same code path as
a fresh conversion (``load_net`` with the weights), and outputs are bit-identical,
(3) costs a plain memory copy to read (no protobuf walk).
The key is the weights' own git blob id, computed on each load, so changed weights get a new
entry (older entries for that file are removed) and a cache can never answer for other bytes.
Each entry's own bytes are checked too: the SHA-256 of the ``.npz``, recorded at write time in
``<entry>.npz.sha256`` (both files written as a set), is compared before the arrays are used;
an entry whose bytes changed (disk damage, an edit) is logged as a warning, ignored and rebuilt
from the identity-checked caffemodel. The record sits beside the entry, so it catches damage and
edits by anything but a writer who also rewrites the record: the cache is as trustworthy as the
folder it is in, while the caffemodel is checked against the card shipped with the package.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CaffeCompatError, MissingFileError, Remedy
from ..io import read_mean, read_weights
from ..io.atomic import atomic_outputs, remove_stale_partials
from ..io.identity import Identity, file_identity
from ..io.weights import Weights
from ..ir.load import load_net
from ..zoo import FILE_NAME, FileSpec, ModelCard, check_model_name, load_card
from .download import fetch_spec
from .precision import resolve_precision
from .runners import RUNTIMES

ENV_HOME = "CAFFE_COMPAT_HOME"
CACHE_FORMAT = 1
_GIT_BLOB = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASHED = ".sha256"  # the sidecar's suffix, after ".npz"
_ENTRY_TAILS = ("npz", "npz" + _HASHED)
log = logging.getLogger(__name__)


def cache_home(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$CAFFE_COMPAT_HOME``, else
    ``~/.cache/caffe-compat``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "caffe-compat"


def model_info(name: str) -> ModelCard:
    """The zoo card of ``name``: title, paper, license, labels, input, files and their sources."""
    return load_card(name)


def _card(name: str | ModelCard) -> ModelCard:
    return name if isinstance(name, ModelCard) else load_card(name)


def model_folder(name: str | ModelCard, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a model's files go: ``<cache home>/<model name>`` (a card built in code is checked
    here too: its name must not reach outside the cache)."""
    card = _card(name)
    return cache_home(cache_dir) / check_model_name(card.name, path=card.card_path or None)


def _where_to_get(spec: FileSpec) -> str:
    return "; ".join(source.describe() for source in spec.sources) or "no source recorded"


def _ensure(
    card: ModelCard,
    spec: FileSpec,
    folder: Path,
    *,
    download: bool,
    progress: bool,
    verify_identity: bool,
) -> tuple[Path, Identity]:
    """The file of ``spec`` in ``folder``, downloaded if allowed, identity-checked unless not."""
    if not FILE_NAME.fullmatch(spec.file):
        raise CaffeCompatError(f'card of "{card.name}": {spec.file!r} is not a bare file name')
    path = folder / spec.file
    if not path.is_file():
        by_hand = (
            f'{spec.file} for "{card.name}": put it at exactly this path (get it from '
            f"{_where_to_get(spec)})"
        )
        sources = [source.url for source in spec.sources]
        if not download:
            raise MissingFileError(
                f"not in the cache; {by_hand}",
                file=spec.file,
                expected_path=str(path),
                sources=sources,
                remedy=Remedy("download", purpose="to download and verify it"),
            )
        log.info("%s is not in the cache: downloading it to %s", spec.file, path)
        try:
            identity = fetch_spec(spec, folder, progress=progress)
        except CaffeCompatError as exc:
            raise MissingFileError(
                f"{exc.reason}; to install it by hand: {by_hand}",
                file=spec.file,
                expected_path=str(path),
                sources=sources,
            ) from None
    else:
        identity = file_identity(path)
    if verify_identity:
        check_identity(card, spec, path, identity)
    return path, identity


def check_identity(card: ModelCard, spec: FileSpec, path: Path, identity: Identity) -> None:
    """Raise unless ``identity`` matches every identity (and the size) the card gives."""
    for kind, expected in spec.identities():
        got = getattr(identity, kind)
        if got != expected:
            raise CaffeCompatError(
                f'not the released {spec.file} of "{card.name}": {kind.replace("_", " ")} '
                f"{got} ({identity.size} bytes), expected {expected}; delete it to download it "
                "again",
                path=str(path),
                remedy=Remedy(
                    "verify_identity", purpose="to use your own (e.g. fine-tuned) weights"
                ),
            )
    if spec.size is not None and identity.size != spec.size:
        raise CaffeCompatError(
            f'not the released {spec.file} of "{card.name}": {identity.size} bytes, expected '
            f"{spec.size}; delete it to download it again",
            path=str(path),
        )


def _cache_path(weights: Path, identity: Identity) -> Path:
    return weights.parent / "converted" / f"{weights.stem}.{identity.git_blob}.npz"


class _HashingWriter:
    """A write-only stream that hashes what passes through (zipfile then writes it in one pass,
    with data descriptors, since it cannot seek back)."""

    def __init__(self, out: Any) -> None:
        self.out, self.sha256 = out, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def read(self, *_: Any) -> bytes:  # numpy asks for it to tell a stream from a path
        raise io.UnsupportedOperation("write-only")


def _save_cache(target: Path, weights: Weights, identity: Identity) -> None:
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for name, blobs in weights.blobs.items():
        layers.append([name, len(blobs)])
        for blob in blobs:
            arrays[f"b{len(arrays)}"] = blob
    manifest = {
        "format": CACHE_FORMAT,
        "git_blob": identity.git_blob,
        "size": identity.size,
        "weights_format": weights.format,
        "net_name": weights.net_name,
        "layers": layers,
    }
    arrays["manifest"] = np.array(json.dumps(manifest))
    record = target.with_name(target.name + _HASHED)
    if target.parent.is_dir():  # left by a load that was killed while caching
        for path in (target, record):
            remove_stale_partials(path)
    with atomic_outputs([target, record]) as (tmp, tmp_record):
        with open(tmp, "wb") as handle:
            writer = _HashingWriter(handle)
            np.savez(writer, **arrays)
        tmp_record.write_text(writer.sha256.hexdigest() + "\n", encoding="ascii")
    stem = target.name[: -len(f".{identity.git_blob}.npz")]
    for old in target.parent.glob(f"{glob.escape(stem)}.*.npz*"):
        key, _, tail = old.name[len(stem) + 1 :].partition(".")
        if old not in (target, record) and _GIT_BLOB.fullmatch(key) and tail in _ENTRY_TAILS:
            old.unlink(missing_ok=True)  # converted from weights that are no longer there


def _recorded_hash(target: Path) -> str | None:
    try:
        text = target.with_name(target.name + _HASHED).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _SHA256.fullmatch(text) else None


def _load_cache(target: Path, weights_path: Path, identity: Identity) -> Weights | None:
    """The cached arrays, or None when absent, unreadable, changed since written, or made from
    other bytes."""
    if not target.is_file():
        return None
    recorded = _recorded_hash(target)
    try:
        with open(target, "rb") as handle:
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            if recorded is None or digest.hexdigest() != recorded:
                log.warning(
                    "conversion cache entry %s %s; ignoring it and converting %s again",
                    target,
                    "has no valid hash record" if recorded is None else "changed since written",
                    weights_path,
                )
                return None
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as data:
                manifest = json.loads(str(data["manifest"]))
                if (
                    manifest.get("format") != CACHE_FORMAT
                    or manifest.get("git_blob") != identity.git_blob
                    or manifest.get("size") != identity.size
                ):
                    return None
                blobs: dict[str, list[np.ndarray]] = {}
                index = 0
                for name, count in manifest["layers"]:
                    blobs[name] = [data[f"b{index + k}"] for k in range(count)]
                    index += count
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None  # a damaged cache entry is rebuilt, never trusted
    return Weights(
        path=str(weights_path),
        format=manifest["weights_format"],
        blobs=blobs,
        net_name=manifest["net_name"],
    )


def _weights(path: Path, identity: Identity) -> Weights:
    """The parsed weights: from the conversion cache if it holds these bytes, else parsed (and
    cached)."""
    target = _cache_path(path, identity)
    cached = _load_cache(target, path, identity)
    if cached is not None:
        log.debug("weights of %s read from the conversion cache %s", path.name, target)
        return cached
    weights = read_weights(path)
    with contextlib.suppress(OSError):  # a read-only cache only costs the next load a parse
        _save_cache(target, weights, identity)
    return weights


def load_pretrained(
    name: str | ModelCard,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    backend: str = "torch",
    device: str = "cpu",
    progress: bool = True,
    verify_identity: bool = True,
    precision: str | None = None,
) -> Any:
    """A zoo model with its released weights: an eval-mode ``CaffeNet`` (torch) or ONNX model.

    ``name`` is a zoo name (``caffe_compat.zoo.list_models()``) or a ``ModelCard``, e.g. one
    read with ``caffe_compat.zoo.read_card`` for a mirror or a fine-tuned variant. The weights
    file must be in ``model_folder(name, cache_dir)`` or ``download=True`` fetches it (progress
    bar on stderr unless ``progress=False``). Its git blob id must equal the card's; pass
    ``verify_identity=False`` only to run weights of your own (e.g. fine-tuned) in the released
    architecture.

    torch: ``model(x)`` maps N x ``card.input.shape`` (BGR, 0..255, mean subtracted: see
    ``caffe_compat.app.preprocess``) to the card's output blob (``prob`` for most; ``detection_out``
    for detectors); ``model.labels`` names its classes and
    ``model.card`` holds the card (mean values, default preprocessing mode). onnx: an
    ``onnx.ModelProto`` whose metadata holds the labels and the weights' identity; ``device``
    applies to torch only. ``precision`` is the torch model's numeric mode (``exact``, ``fp32``,
    ``tf32``, ``fp16``; see ``caffe_compat.app.precision``): on CUDA the default is the card's
    ``cuda_precision`` (the fastest mode whose parity with Caffe was measured to hold), else
    ``exact``; the mode is held by the model, never set process-wide.
    """
    card = _card(name)
    if backend not in RUNTIMES:
        raise CaffeCompatError(f"backend must be one of {', '.join(RUNTIMES)}, not {backend!r}")
    mode = resolve_precision(
        precision, backend=backend, device=device, card_default=card.cuda_precision
    )
    folder = model_folder(card, cache_dir)
    path, identity = _ensure(
        card,
        card.weights,
        folder,
        download=download,
        progress=progress,
        verify_identity=verify_identity,
    )
    loaded = load_net(card.prototxt_path(), _weights(path, identity))
    if backend == "onnx":
        from ..converters.onnx.export import to_onnx

        return to_onnx(
            loaded.graph,
            metadata={
                "model": card.name,
                "labels": json.dumps(list(card.labels)),
                "source_weights": f"{card.weights.file} {identity.as_metadata()}",
            },
        )
    from ..converters.torch.model import to_torch

    model = to_torch(loaded.graph).to(device)
    model.set_precision(mode)
    model.eval()
    model.labels = card.labels
    model.card = card
    return model


def mean_image(
    name: str | ModelCard,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """The model's identity-checked mean image (3 x H x W, BGR), for
    ``caffe_compat.app.preprocess``."""
    card = _card(name)
    if card.mean is None:
        raise CaffeCompatError(
            f'"{card.name}" has no mean image; its mean is the per-channel values '
            f"{list(card.mean_values or ())} (card field mean.values)"
        )
    folder = model_folder(card, cache_dir)
    path, _ = _ensure(
        card, card.mean, folder, download=download, progress=progress, verify_identity=True
    )
    return read_mean(path)


def decode(prob: Any, labels: tuple[str, ...] | list[str]) -> list[tuple[str, float]]:
    """The most likely label and its probability for each row of ``prob`` (numpy or torch)."""
    values = np.asarray(prob.detach().cpu() if hasattr(prob, "detach") else prob)
    values = values.reshape(values.shape[0], -1)
    if values.shape[1] != len(labels):
        raise CaffeCompatError(f"{values.shape[1]} outputs per row but {len(labels)} labels")
    best = values.argmax(axis=1)
    return [(labels[i], float(values[row, i])) for row, i in enumerate(best)]
