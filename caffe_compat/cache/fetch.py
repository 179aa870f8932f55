"""Fetch-if-missing: a card's file in the cache, downloaded when absent (if the caller passes a
way to download), checked against the card's identity.

The transfer itself is the caller's (``caffe_compat.app.download``), so the core never imports
network code. Every failure is one ``MissingFileError`` line naming the file, the exact path to
put it at and where to get it, so a copy fetched by other means drops straight into place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CaffeCompatError, MissingFileError, Remedy
from ..io.identity import Identity, file_identity
from ..zoo import FILE_NAME, FileSpec, ModelCard, Source, check_model_name
from .home import UnsafeCacheError, checked_folder

# Downloads a card's file into a folder: its identity and the source that served it.
Fetch = Callable[[FileSpec, Path], tuple[Identity, Source]]
log = logging.getLogger(__package__)


@dataclass(frozen=True)
class Obtained:
    path: Path
    identity: Identity
    source: Source | None  # where it was downloaded from; None when it was already there


def where_to_get(spec: FileSpec) -> str:
    """Every source of ``spec``, as a user reads them."""
    return "; ".join(source.describe() for source in spec.sources) or "no source recorded"


def model_folder(card: ModelCard, home: Path) -> Path:
    """``<home>/<model name>``; the name is checked, so no card reaches outside the cache."""
    return home / check_model_name(card.name, path=card.card_path or None)


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


def obtain(
    card: ModelCard,
    spec: FileSpec,
    home: Path,
    *,
    fetch: Fetch | None,
    force: bool = False,
    verify_identity: bool = True,
    absent: str = "is not in the cache",
    remedy: Remedy | None = None,
    then: str = "",
) -> Obtained:
    """The file of ``spec`` in ``<home>/<model>``: there already (unless ``force``), or
    downloaded by ``fetch`` (None: never), then identity-checked unless ``verify_identity`` is
    off. When it cannot be had, the ``MissingFileError`` says why: ``absent`` (with ``remedy``)
    when downloading is not allowed, else no direct source or the download's failure; ``then``
    ends the line (what to run afterwards)."""
    if not FILE_NAME.fullmatch(spec.file):
        raise CaffeCompatError(f'card of "{card.name}": {spec.file!r} is not a bare file name')
    parts = (model_folder(card, home).name,)
    folder = checked_folder(home, *parts)
    path = folder / spec.file
    source = None
    if force or not path.is_file():
        if fetch is None:
            downloadable = any(s.downloadable for s in spec.sources)
            raise _missing(card, spec, path, absent, then, remedy if downloadable else None)
        if not any(s.downloadable for s in spec.sources):
            why = "has no direct download (only a web page lists it)"
            raise _missing(card, spec, path, why, then)
        log.info("%s is not in the cache: downloading it to %s", spec.file, path)
        try:
            folder = checked_folder(home, *parts, create=True)
            identity, source = fetch(spec, folder)
        except OSError as exc:
            raise _missing(card, spec, path, f"cannot be stored ({exc.strerror})", then) from None
        except (MissingFileError, UnsafeCacheError):
            raise
        except CaffeCompatError as exc:
            why = f"could not be downloaded ({exc.reason})"
            raise _missing(card, spec, path, why, then) from None
    else:
        identity = file_identity(path)
    if verify_identity:
        check_identity(card, spec, path, identity)
    return Obtained(path, identity, source)


def _missing(
    card: ModelCard,
    spec: FileSpec,
    path: Path,
    why: str,
    then: str,
    remedy: Remedy | None = None,
) -> MissingFileError:
    return MissingFileError(
        f'{spec.file} for "{card.name}" {why}; put it at exactly this path (get it from '
        f"{where_to_get(spec)}){then}",
        file=spec.file,
        expected_path=str(path),
        sources=[source.url for source in spec.sources],
        remedy=remedy,
    )
