"""``load_pretrained("levi_hassner_age")``: a zoo model's released weights as a ready module.

The weights live in a cache folder (argument > ``$CAFFE_COMPAT_HOME`` > ``~/.cache/caffe-compat``),
one sub-folder per model: ``<home>/<model>/<weights file>``. Users may drop the released file
there themselves; ``download=True`` fetches it. Either way the file's git blob id is checked
against the card on every load (unless ``verify_identity=False``), so a truncated, swapped or
tampered file is never run; hashing 44 MB costs about 0.1 s.

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
"""

from __future__ import annotations

import contextlib
import glob
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
from ..io.atomic import atomic_output
from ..io.identity import Identity, file_identity
from ..io.weights import Weights
from ..ir.load import load_net
from ..zoo import FileSpec, ModelCard, load_card
from .download import fetch_spec

ENV_HOME = "CAFFE_COMPAT_HOME"
BACKENDS = ("torch", "onnx")
CACHE_FORMAT = 1
_GIT_BLOB = re.compile(r"[0-9a-f]{40}")
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
    """Where a model's files go: ``<cache home>/<model name>``."""
    return cache_home(cache_dir) / _card(name).name


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
        expected = spec.git_blob or spec.sha256
        got = identity.git_blob if spec.git_blob else identity.sha256
        if expected is not None and got != expected:
            kind = "git blob" if spec.git_blob else "sha256"
            raise CaffeCompatError(
                f'not the released {spec.file} of "{card.name}": {kind} {got} ({identity.size} '
                f"bytes), expected {expected}; delete it to download it again",
                path=str(path),
                remedy=Remedy(
                    "verify_identity", purpose="to use your own (e.g. fine-tuned) weights"
                ),
            )
    return path, identity


def _cache_path(weights: Path, identity: Identity) -> Path:
    return weights.parent / "converted" / f"{weights.stem}.{identity.git_blob}.npz"


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
    with atomic_output(target) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    stem = target.name[: -len(f".{identity.git_blob}.npz")]
    for old in target.parent.glob(f"{glob.escape(stem)}.*.npz"):
        key = old.name[len(stem) + 1 : -len(".npz")]
        if old != target and _GIT_BLOB.fullmatch(key):
            old.unlink(missing_ok=True)  # converted from weights that are no longer there


def _load_cache(target: Path, weights_path: Path, identity: Identity) -> Weights | None:
    """The cached arrays, or None when absent, unreadable or made from other bytes."""
    if not target.is_file():
        return None
    try:
        with np.load(target, allow_pickle=False) as data:
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
) -> Any:
    """A zoo model with its released weights: an eval-mode ``CaffeNet`` (torch) or ONNX model.

    ``name`` is a zoo name (``caffe_compat.zoo.list_models()``) or a ``ModelCard``, e.g. one
    read with ``caffe_compat.zoo.read_card`` for a mirror or a fine-tuned variant. The weights
    file must be in ``model_folder(name, cache_dir)`` or ``download=True`` fetches it (progress
    bar on stderr unless ``progress=False``). Its git blob id must equal the card's; pass
    ``verify_identity=False`` only to run weights of your own (e.g. fine-tuned) in the released
    architecture.

    torch: ``model(x)`` maps N x 3 x 227 x 227 (BGR, 0..255, mean subtracted: see
    ``caffe_compat.preprocess``) to the ``prob`` blob; ``model.labels`` names its columns and
    ``model.card`` holds the card (mean values, default preprocessing mode). onnx: an
    ``onnx.ModelProto`` whose metadata holds the labels and the weights' identity; ``device``
    applies to torch only. On CUDA, PyTorch's default TF32 convolutions differ from Caffe's fp32
    by about 1e-3; set ``torch.backends.cudnn.allow_tf32 = False`` for Caffe's numbers.
    """
    card = _card(name)
    if backend not in BACKENDS:
        raise CaffeCompatError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
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
    """The model's identity-checked mean image (3 x H x W, BGR), for ``caffe_compat.preprocess``."""
    card = _card(name)
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
