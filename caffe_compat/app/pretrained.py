"""``load_pretrained("levi_hassner_age")``: a zoo model's released weights as a ready module.

The weights live in the cache (``caffe_compat.cache``: argument > ``$CAFFE_COMPAT_HOME`` >
``~/.cache/caffe-compat``), one sub-folder per model: ``<home>/<model>/<weights file>``. Users
may drop the released file there themselves; ``download=True`` fetches it. Either way the
file's identity (every one of git blob id, SHA-1, SHA-256 and size the card gives) is checked on
every load (unless ``verify_identity=False``), so a truncated, swapped or tampered file is never
run; hashing 44 MB costs about 0.1 s. A card whose authors published no identity says so
(``identity_note``).

The first load parses the caffemodel and caches its arrays (``caffe_compat.cache.weights``: raw
arrays, no pickle, signed with the cache's key and tied to the weights' size and SHA-256); later
loads read that instead, and an entry that does not match (edited, copied from other weights,
damaged) is rebuilt from the identity-checked caffemodel with one warning.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import ENV_HOME, Obtained, cache_home, check_identity, obtain
from ..cache.fetch import model_folder as _model_folder
from ..cache.weights import cached_weights
from ..errors import CaffeCompatError, Remedy
from ..io import read_mean
from ..ir.load import load_net
from ..zoo import FileSpec, ModelCard, load_card
from .download import fetch_spec_from
from .precision import resolve_precision
from .runners import RUNTIMES

__all__ = [
    "ENV_HOME",
    "cache_home",
    "check_identity",
    "decode",
    "load_pretrained",
    "mean_image",
    "model_folder",
    "model_info",
]


def model_info(name: str) -> ModelCard:
    """The zoo card of ``name``: title, paper, license, labels, input, files and their sources."""
    return load_card(name)


def _card(name: str | ModelCard) -> ModelCard:
    return name if isinstance(name, ModelCard) else load_card(name)


def model_folder(name: str | ModelCard, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a model's files go: ``<cache home>/<model name>`` (a card built in code is checked
    here too: its name must not reach outside the cache)."""
    return _model_folder(_card(name), cache_home(cache_dir))


def _obtain(
    card: ModelCard,
    spec: FileSpec,
    home: Path,
    *,
    download: bool,
    progress: bool,
    verify_identity: bool,
) -> Obtained:
    """The file of ``spec``, downloaded if allowed, identity-checked unless not."""
    fetch = functools.partial(fetch_spec_from, progress=progress) if download else None
    return obtain(
        card,
        spec,
        home,
        fetch=fetch,
        verify_identity=verify_identity,
        remedy=Remedy("download", purpose="to download and verify it"),
    )


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
    home = cache_home(cache_dir)
    weights = _obtain(
        card,
        card.weights,
        home,
        download=download,
        progress=progress,
        verify_identity=verify_identity,
    )
    identity = weights.identity
    parsed = cached_weights(home, weights.path.parent.name, weights.path, identity).weights
    loaded = load_net(card.prototxt_path(), parsed)
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
    mean = _obtain(
        card,
        card.mean,
        cache_home(cache_dir),
        download=download,
        progress=progress,
        verify_identity=True,
    )
    return read_mean(mean.path)


def decode(prob: Any, labels: tuple[str, ...] | list[str]) -> list[tuple[str, float]]:
    """The most likely label and its probability for each row of ``prob`` (numpy or torch)."""
    values = np.asarray(prob.detach().cpu() if hasattr(prob, "detach") else prob)
    values = values.reshape(values.shape[0], -1)
    if values.shape[1] != len(labels):
        raise CaffeCompatError(f"{values.shape[1]} outputs per row but {len(labels)} labels")
    best = values.argmax(axis=1)
    return [(labels[i], float(values[row, i])) for row, i in enumerate(best)]
