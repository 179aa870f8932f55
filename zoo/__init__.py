"""The model zoo: one TOML card per model, read into a validated, typed ``ModelCard``.

Cards are data, not code, so adding a model means adding a card and a deploy prototxt. Every card
is checked field by field when read (types, hex ids, known keys), so a typo in a card fails with a
one-line error naming the card and the field instead of deep inside a download or a conversion.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..errors import CaffeCompatError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SOURCE_KINDS = ("file", "zip", "page")
# The test-time preprocessing modes a card may name (caffe_compat.app.preprocess implements them).
PREPROCESSING_MODES = ("oversample", "center", "opencv")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# A card's name is a folder of the cache and its files are files in it: plain names only, so no
# card can reach outside its folder ("../..", "/etc", hidden names, separators, NUL).
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def check_model_name(name: str, *, path: str | None = None) -> str:
    """``name`` if it is a valid model name (``[a-z0-9_.-]``, not starting with a dot); else a
    one-line ``CaffeCompatError``."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name) or len(name) > 100:
        raise CaffeCompatError(
            f"card field name: must be lower-case letters, digits, '_', '.' or '-' (no path "
            f"parts, not starting with '.'), got {name!r}",
            path=path,
        )
    return name


@dataclass(frozen=True)
class Source:
    """Where a file can be had. ``file``: the URL is the file itself; ``zip``: an archive holding
    it as ``member``; ``page``: a web page with links, shown to users but never fetched."""

    url: str
    kind: str
    member: str | None = None

    @property
    def downloadable(self) -> bool:
        return self.kind != "page"

    def describe(self) -> str:
        if self.kind == "zip":
            return f"{self.url} (zip archive, member {self.member})"
        return f"{self.url} ({'direct file' if self.kind == 'file' else 'web page'})"


@dataclass(frozen=True)
class FileSpec:
    """A file a model needs, its identity (git blob id, optional size and SHA-256), its sources."""

    file: str
    git_blob: str | None
    sources: tuple[Source, ...]
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class InputSpec:
    """What the net expects: ``shape`` is per image (C, H, W); the batch axis comes first."""

    blob: str
    shape: tuple[int, int, int]
    channel_order: str
    value_range: tuple[float, float]
    resize: int


@dataclass(frozen=True)
class ModelCard:
    name: str
    title: str
    paper: str
    license: str
    prototxt: str  # a file in the zoo package, or an absolute path (custom cards)
    output: str
    labels: tuple[str, ...]
    default_mode: str
    weights: FileSpec
    mean: FileSpec
    mean_values: tuple[float, float, float]  # per-channel means, in the input's channel order
    input: InputSpec
    card_path: str = ""

    def prototxt_path(self) -> Path:
        """The deploy prototxt as a file path (package data for zoo cards)."""
        path = Path(self.prototxt)
        if path.is_absolute():
            return path
        return Path(str(files(__name__) / self.prototxt))


class _Reader:
    """Typed access to one TOML table; every problem names the card file and the key."""

    def __init__(self, table: Mapping[str, Any], where: str, path: str) -> None:
        self.table, self.where, self.path = table, where, path
        self.used: set[str] = set()

    def fail(self, key: str, problem: str) -> CaffeCompatError:
        return CaffeCompatError(f"card field {self.where}{key}: {problem}", path=self.path)

    def get(self, key: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self.fail(key, "missing")
            return None
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def sub(self, key: str) -> _Reader:
        return _Reader(self.get(key, dict), f"{self.where}{key}.", self.path)

    def numbers(self, key: str, count: int, kind: type) -> tuple:
        values = self.get(key, list)
        kinds = (int, float) if kind is float else (int,)
        if len(values) != count or any(
            isinstance(v, bool) or not isinstance(v, kinds) for v in values
        ):
            raise self.fail(key, f"expected {count} {kind.__name__} values, got {values!r}")
        return tuple(kind(v) for v in values)

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (known: {', '.join(sorted(self.used))})")


def _hex(reader: _Reader, key: str, pattern: re.Pattern[str]) -> str | None:
    value = reader.get(key, str, required=False)
    if value is not None and not pattern.fullmatch(value):
        raise reader.fail(key, f"expected {pattern.pattern} (lower-case hex), got {value!r}")
    return value


def _file_spec(reader: _Reader) -> FileSpec:
    name = reader.get("file", str)
    if not FILE_NAME.fullmatch(name) or len(name) > 200:
        raise reader.fail(
            "file", f"must be a bare file name ([A-Za-z0-9_.+-], no path parts), got {name!r}"
        )
    sources = []
    for index, table in enumerate(reader.get("sources", list)):
        if not isinstance(table, dict):
            raise reader.fail("sources", f"entry {index} is not a table")
        src = _Reader(table, f"{reader.where}sources[{index}].", reader.path)
        url, kind = src.get("url", str), src.get("kind", str)
        if kind not in SOURCE_KINDS:
            raise src.fail("kind", f"must be one of {', '.join(SOURCE_KINDS)}, got {kind!r}")
        if not url.startswith(("https://", "http://")):
            raise src.fail("url", f"must be an http(s) URL, got {url!r}")
        member = src.get("member", str, required=kind == "zip")
        if member is not None and kind != "zip":
            raise src.fail("member", "only zip sources have a member")
        src.done()
        sources.append(Source(url, kind, member))
    size = reader.get("size", int, required=False)
    if size is not None and size <= 0:
        raise reader.fail("size", f"must be positive, got {size}")
    return FileSpec(
        file=name,
        git_blob=_hex(reader, "git_blob", _HEX40),
        sources=tuple(sources),
        size=size,
        sha256=_hex(reader, "sha256", _HEX64),
    )


def parse_card(data: Mapping[str, Any], *, path: str = "<card>") -> ModelCard:
    """Validate a card's TOML table into a ``ModelCard`` (one-line error on the first problem)."""
    top = _Reader(data, "", path)
    weights, mean, inp = top.sub("weights"), top.sub("mean"), top.sub("input")
    mean_values = mean.numbers("values", 3, float)
    default_mode = top.get("default_mode", str)
    if default_mode not in PREPROCESSING_MODES:
        raise top.fail(
            "default_mode", f"must be one of {', '.join(PREPROCESSING_MODES)}, got {default_mode!r}"
        )
    labels = tuple(top.get("labels", list))
    if not labels or not all(isinstance(label, str) for label in labels):
        raise top.fail("labels", "expected a non-empty list of strings")
    prototxt = top.get("prototxt", str)
    if not Path(prototxt).is_absolute() and not FILE_NAME.fullmatch(prototxt):
        raise top.fail(
            "prototxt", f"must be a file of the zoo or an absolute path, got {prototxt!r}"
        )
    card = ModelCard(
        name=check_model_name(top.get("name", str), path=path),
        title=top.get("title", str),
        paper=top.get("paper", str),
        license=top.get("license", str),
        prototxt=prototxt,
        output=top.get("output", str),
        labels=labels,
        default_mode=default_mode,
        weights=_file_spec(weights),
        mean=_file_spec(mean),
        mean_values=mean_values,
        input=InputSpec(
            blob=inp.get("blob", str),
            shape=inp.numbers("shape", 3, int),
            channel_order=inp.get("channel_order", str),
            value_range=inp.numbers("value_range", 2, float),
            resize=inp.get("resize", int),
        ),
        card_path=path,
    )
    for reader in (weights, mean, inp, top):
        reader.done()
    return card


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read and validate a card file anywhere (custom models, mirrors, fine-tuned variants)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaffeCompatError(f"cannot read card: {exc.strerror}", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise CaffeCompatError(f"not valid TOML: {exc}", path=str(path)) from None
    return parse_card(data, path=str(path))


def list_models() -> list[str]:
    """Names of the zoo's models (one per card), sorted."""
    return sorted(
        entry.name[: -len(".toml")]
        for entry in files(__name__).iterdir()
        if entry.name.endswith(".toml")
    )


@cache
def load_card(name: str) -> ModelCard:
    """The zoo card called ``name``; an unknown name lists the known ones."""
    known = list_models()
    if name not in known:
        raise CaffeCompatError(f'no zoo model named "{name}"; known models: {", ".join(known)}')
    resource = files(__name__) / f"{name}.toml"
    card = parse_card(tomllib.loads(resource.read_text(encoding="utf-8")), path=str(resource))
    if card.name != name:
        raise CaffeCompatError(
            f'card says name "{card.name}", file is {name}.toml', path=str(resource)
        )
    return card


__all__ = [
    "FILE_NAME",
    "MODEL_NAME",
    "PREPROCESSING_MODES",
    "SOURCE_KINDS",
    "FileSpec",
    "InputSpec",
    "ModelCard",
    "Source",
    "check_model_name",
    "list_models",
    "load_card",
    "parse_card",
    "read_card",
]
