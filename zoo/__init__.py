"""The model zoo: one TOML card per model, read into a validated, typed ``ModelCard``.

Cards are data, not code, so adding a model means adding a card and a deploy prototxt. Every card
is checked field by field when read (types, hex ids, known keys), so a typo in a card fails with a
one-line error naming the card and the field instead of deep inside a download or a conversion.

Labels are inline (``labels = [...]``) or a file (``labels_file``: one label per line; a bare name
is package data beside the cards, e.g. the shared ``imagenet_labels.txt``). A file's identity is
any of ``git_blob``, ``sha1`` (plain SHA-1) and ``sha256``, all checked when given; a downloadable
file with none of them must carry an ``identity_note`` saying why none exists. A file states
its exact ``size`` or, where no exact size is published, a ``max_size`` bound; a ``zip`` source
may state its archive's ``max_size``: downloads stop there (the zoo's own cards state one of
them for every downloadable file and archive). The mean is per-channel ``values``, a mean
``file``, or both.
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
TASKS = ("classification", "detection")
MAX_LABELS_BYTES = 1 << 20  # a label file above this is refused before it is read
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
    max_size: int | None = None  # a zip archive's bound in bytes (None: the downloader's)

    @property
    def downloadable(self) -> bool:
        return self.kind != "page"

    def describe(self) -> str:
        if self.kind == "zip":
            return f"{self.url} (zip archive, member {self.member})"
        return f"{self.url} ({'direct file' if self.kind == 'file' else 'web page'})"


@dataclass(frozen=True)
class FileSpec:
    """A file a model needs, its identity (git blob id, SHA-1, SHA-256, size: any given are all
    checked), where that identity was published, and where the file can be had."""

    file: str
    git_blob: str | None
    sources: tuple[Source, ...]
    size: int | None = None
    sha256: str | None = None
    sha1: str | None = None
    identity_source: str | None = None  # where the identity was published
    identity_note: str | None = None  # why there is none, when there is none
    max_size: int | None = None  # a bound in bytes where the exact size is not published

    @property
    def size_cap(self) -> int | None:
        """Most bytes a download of this file may bring: its size, else its bound."""
        return self.size if self.size is not None else self.max_size

    def identities(self) -> tuple[tuple[str, str], ...]:
        """The (kind, value) pairs a copy must match: ``git_blob``, ``sha1``, ``sha256``."""
        pairs = (("git_blob", self.git_blob), ("sha1", self.sha1), ("sha256", self.sha256))
        return tuple((kind, value) for kind, value in pairs if value)


@dataclass(frozen=True)
class InputSpec:
    """What the net expects: ``shape`` is per image (C, H, W); the batch axis comes first."""

    blob: str
    shape: tuple[int, int, int]
    channel_order: str
    value_range: tuple[float, float]
    resize: int
    scale: float = 1.0  # multiplies the mean-subtracted input (Caffe's transform_param.scale)


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
    mean: FileSpec | None  # a mean image file, when the model was trained with one
    mean_values: tuple[float, float, float] | None  # per-channel means, input channel order
    input: InputSpec
    card_path: str = ""
    cuda_precision: str = "exact"  # the fastest numeric mode whose parity was measured to hold
    task: str = "classification"
    labels_file: str | None = None  # where ``labels`` were read from, when not inline
    mean_note: str | None = None
    notes: str | None = None

    def prototxt_path(self) -> Path:
        """The deploy prototxt as a file path (package data for zoo cards)."""
        path = Path(self.prototxt)
        if path.is_absolute():
            return path
        return Path(str(files(__name__) / self.prototxt))


def _package_or_absolute(name: str) -> Path:
    """A bare name is package data beside the cards; an absolute path is itself."""
    path = Path(name)
    return path if path.is_absolute() else Path(str(files(__name__) / name))


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


def _text(reader: _Reader, key: str) -> str | None:
    value = reader.get(key, str, required=False)
    if value is not None and not value.strip():
        raise reader.fail(key, "must not be empty")
    return value


def _positive(reader: _Reader, key: str) -> int | None:
    value = reader.get(key, int, required=False)
    if value is not None and value <= 0:
        raise reader.fail(key, f"must be positive, got {value}")
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
        archive_bound = _positive(src, "max_size")
        if archive_bound is not None and kind != "zip":
            raise src.fail("max_size", "only zip sources have an archive bound")
        src.done()
        sources.append(Source(url, kind, member, archive_bound))
    size, bound = _positive(reader, "size"), _positive(reader, "max_size")
    if size is not None and bound is not None:
        raise reader.fail("max_size", "give the exact size or a bound, not both")
    spec = FileSpec(
        file=name,
        git_blob=_hex(reader, "git_blob", _HEX40),
        sources=tuple(sources),
        size=size,
        sha256=_hex(reader, "sha256", _HEX64),
        sha1=_hex(reader, "sha1", _HEX40),
        identity_source=_text(reader, "identity_source"),
        identity_note=_text(reader, "identity_note"),
        max_size=bound,
    )
    if not spec.identities() and spec.identity_note is None:
        raise reader.fail(
            "identity_note",
            "missing: a file with no git_blob, sha1 or sha256 must say why none exists",
        )
    return spec


def _read_labels(reader: _Reader, name: str) -> tuple[str, ...]:
    """One label per line (UTF-8; trailing empty lines ignored, empty lines inside refused)."""
    path = _package_or_absolute(name)
    try:
        size = path.stat().st_size
        if size > MAX_LABELS_BYTES:
            raise reader.fail("labels_file", f"{path} is {size} bytes, over {MAX_LABELS_BYTES}")
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise reader.fail("labels_file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise reader.fail("labels_file", f"{path} is not UTF-8 text ({exc.reason})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise reader.fail("labels_file", f"{path} line {number} is empty")
    if not lines:
        raise reader.fail("labels_file", f"{path} holds no labels")
    return tuple(lines)


def _labels(top: _Reader) -> tuple[tuple[str, ...], str | None]:
    inline = top.get("labels", list, required=False)
    name = top.get("labels_file", str, required=False)
    if (inline is None) == (name is None):
        raise top.fail("labels", "give exactly one of labels (a list) and labels_file (a file)")
    if name is not None:
        return _read_labels(top, name), name
    if not inline or not all(isinstance(label, str) for label in inline):
        raise top.fail("labels", "expected a non-empty list of strings")
    return tuple(inline), None


_FILE_KEYS = ("file", "sources", "git_blob", "sha1", "sha256", "size", "max_size")


def _mean(reader: _Reader) -> tuple[FileSpec | None, tuple | None, str | None]:
    """The mean table: per-channel ``values``, a mean ``file`` (with its identity and sources),
    or both, and an optional ``note`` on where they come from."""
    values = reader.numbers("values", 3, float) if "values" in reader.table else None
    reader.used.add("values")
    spec = _file_spec(reader) if "file" in reader.table else None
    if spec is None:
        extra = ("identity_source", "identity_note")
        stray = [key for key in (*_FILE_KEYS, *extra) if key in reader.table]
        if stray:
            raise reader.fail(stray[0], "only a mean with a file (file = ...) has this")
    if values is None and spec is None:
        raise reader.fail("values", "missing: give per-channel values, a mean file, or both")
    return spec, values, _text(reader, "note")


CUDA_PRECISIONS = ("exact", "fp32")  # the modes a card may promise parity for


def _precision(reader: _Reader) -> str:
    value = reader.get("cuda_precision", str, required=False) or "exact"
    if value not in CUDA_PRECISIONS:
        raise reader.fail("cuda_precision", f"must be one of {', '.join(CUDA_PRECISIONS)}")
    return value


def parse_card(data: Mapping[str, Any], *, path: str = "<card>") -> ModelCard:
    """Validate a card's TOML table into a ``ModelCard`` (one-line error on the first problem)."""
    top = _Reader(data, "", path)
    weights, mean, inp = top.sub("weights"), top.sub("mean"), top.sub("input")
    mean_spec, mean_values, mean_note = _mean(mean)
    default_mode = top.get("default_mode", str)
    if default_mode not in PREPROCESSING_MODES:
        raise top.fail(
            "default_mode", f"must be one of {', '.join(PREPROCESSING_MODES)}, got {default_mode!r}"
        )
    task = top.get("task", str, required=False) or "classification"
    if task not in TASKS:
        raise top.fail("task", f"must be one of {', '.join(TASKS)}, got {task!r}")
    labels, labels_file = _labels(top)
    scale = inp.get("scale", (int, float), required=False)
    if scale is not None and not scale > 0:
        raise inp.fail("scale", f"must be positive, got {scale}")
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
        mean=mean_spec,
        mean_values=mean_values,
        input=InputSpec(
            blob=inp.get("blob", str),
            shape=inp.numbers("shape", 3, int),
            channel_order=inp.get("channel_order", str),
            value_range=inp.numbers("value_range", 2, float),
            resize=inp.get("resize", int),
            scale=1.0 if scale is None else float(scale),
        ),
        card_path=path,
        cuda_precision=_precision(top),
        task=task,
        labels_file=labels_file,
        mean_note=mean_note,
        notes=_text(top, "notes"),
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
    "TASKS",
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
