"""Identity-checked downloads with urllib only: a file is either complete and verified, or absent.

Bytes go to a temporary file in the destination folder while SHA-256 and the git blob id are
computed on the fly; only a file whose identity matches is moved into place (``os.replace``, so
readers never see half a file). Every failure (HTTP error, timeout, short read, wrong identity,
missing or oversized archive member) is one line naming the URL, and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .. import __version__
from ..errors import CaffeCompatError
from ..io.atomic import atomic_output
from ..io.identity import Identity, IdentityHasher, file_identity
from ..io.sniff import explain, sniff
from ..progress import Progress
from ..zoo import FileSpec

_CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0  # seconds without a byte before giving up
MAX_MEMBER_SIZE = 4 << 30  # an archive member above this is refused unless the card gives a size


@contextlib.contextmanager
def _scratch(folder: Path, name: str) -> Iterator[Path]:
    """A temporary file in ``folder`` that is always deleted afterwards (archives)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fail(url: str, reason: str) -> CaffeCompatError:
    return CaffeCompatError(reason, path=url)


def _copy(source: BinaryIO, out: BinaryIO, hasher: IdentityHasher | None, bar: Progress) -> None:
    while chunk := source.read(_CHUNK):
        out.write(chunk)
        if hasher is not None:
            hasher.update(chunk)
        bar.update(len(chunk))


def _fetch_to(
    url: str, tmp: Path, *, size: int | None, label: str, progress: bool, timeout: float
) -> Identity:
    """Stream ``url`` into ``tmp``; hash while streaming when the size is known up front."""
    request = urllib.request.Request(url, headers={"User-Agent": f"caffe-compat/{__version__}"})
    expected: int | None = None
    bar = Progress(None, unit="B", enabled=False)  # replaced once the size is known
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and size is not None and expected != size:
                raise _fail(url, f"the server offers {expected} bytes, expected {size}")
            known = expected if expected is not None else size
            hasher = IdentityHasher(known) if known is not None else None
            bar = Progress(known, label=label, unit="B", enabled=progress, leave=True)
            try:
                with open(tmp, "wb") as out:
                    _copy(response, out, hasher, bar)
            finally:
                bar.close()
    except urllib.error.HTTPError as exc:
        raise _fail(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise _fail(url, f"timed out (no data for {timeout:g} s)") from None
        raise _fail(url, f"cannot connect: {reason}") from None
    except TimeoutError:
        raise _fail(url, f"timed out after {bar.done} bytes (no data for {timeout:g} s)") from None
    except http.client.IncompleteRead as exc:
        got = bar.done + len(exc.partial)
        raise _fail(url, f"truncated download: the connection closed after {got} bytes") from None
    except (ConnectionError, http.client.HTTPException) as exc:
        raise _fail(url, f"connection lost after {bar.done} bytes ({exc})") from None
    except OSError as exc:  # TLS failures, a full disk: still one line naming the URL
        raise _fail(url, f"download failed after {bar.done} bytes: {exc}") from None
    if expected is not None and bar.done != expected:
        raise _fail(url, f"truncated download: got {bar.done} of {expected} bytes (Content-Length)")
    if hasher is None or bar.done != hasher.size:
        return file_identity(tmp)
    return hasher.identity()


def _member(archive: zipfile.ZipFile, member: str, url: str) -> zipfile.ZipInfo:
    """The entry named ``member``, or the only one whose file name is ``member``'s."""
    try:
        return archive.getinfo(member)
    except KeyError:
        pass
    base = Path(member).name
    found = [i for i in archive.infolist() if not i.is_dir() and Path(i.filename).name == base]
    if len(found) == 1:
        return found[0]
    names = ", ".join(i.filename for i in archive.infolist()[:8])
    what = "several entries" if found else "no entry"
    raise _fail(url, f"archive has {what} named {member} (entries: {names})")


def _extract(
    archive_path: Path,
    member: str,
    tmp: Path,
    *,
    url: str,
    size: int | None,
    max_size: int,
    progress: bool,
) -> Identity:
    """Extract one member into ``tmp``, checking its declared size before any byte is written."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            info = _member(archive, member, url)
            if size is not None and info.file_size != size:
                raise _fail(
                    url,
                    f"archive member {info.filename} is {info.file_size} bytes, expected {size}",
                )
            if size is None and info.file_size > max_size:
                raise _fail(
                    url,
                    f"archive member {info.filename} claims {info.file_size} bytes, "
                    f"over the {max_size}-byte limit",
                )
            hasher = IdentityHasher(info.file_size)
            bar = Progress(
                info.file_size,
                label=f"extracting {info.filename}",
                unit="B",
                enabled=progress,
                leave=True,
            )
            try:
                with archive.open(info) as source, open(tmp, "wb") as out:
                    _copy(source, out, hasher, bar)
            finally:
                bar.close()
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # bad headers, data or CRC
        raise _fail(url, f"not a valid zip archive ({exc})") from None
    except NotImplementedError as exc:  # e.g. a compression method zipfile lacks
        raise _fail(url, f"cannot extract {member}: {exc}") from None
    except OSError as exc:
        raise _fail(url, f"cannot extract {member}: {exc}") from None
    try:
        return hasher.identity()
    except ValueError as exc:
        raise _fail(url, f"archive member {member}: {exc}") from None


def _check(url: str, tmp: Path, got: Identity, git_blob: str | None, sha256: str | None) -> None:
    wrong = (git_blob is not None and got.git_blob != git_blob) or (
        sha256 is not None and got.sha256 != sha256
    )
    if not wrong:
        return
    expected = f"git blob {git_blob}" if git_blob else f"sha256 {sha256}"
    actual = f"git blob {got.git_blob}" if git_blob else f"sha256 {got.sha256}"
    with open(tmp, "rb") as handle:
        head = handle.read(4096)
    hint = explain(sniff(head), head, "expected file")
    reason = f"wrong file: expected {expected}, got {actual} ({got.size} bytes); not kept"
    raise _fail(url, f"{reason}: {hint}" if hint else reason)


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    git_blob: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    member: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    max_size: int = MAX_MEMBER_SIZE,
) -> Identity:
    """Download ``url`` to ``dest`` if and only if it has the expected identity; return it.

    ``member`` means ``url`` is a zip archive: it is fetched to a temporary file beside ``dest``
    and only that member is extracted (matched by path, or by file name when it is unique).
    ``progress`` draws a bar on stderr when stderr is a terminal. Raises ``CaffeCompatError``.
    """
    dest = Path(dest)
    with atomic_output(dest) as tmp:
        if member is None:
            got = _fetch_to(
                url,
                tmp,
                size=size,
                label=f"downloading {dest.name}",
                progress=progress,
                timeout=timeout,
            )
        else:
            with _scratch(dest.parent, Path(url).name or "archive") as archive:
                label = f"downloading {Path(url).name or url}"
                _fetch_to(url, archive, size=None, label=label, progress=progress, timeout=timeout)
                got = _extract(
                    archive, member, tmp, url=url, size=size, max_size=max_size, progress=progress
                )
        if size is not None and got.size != size:
            raise _fail(url, f"got {got.size} bytes, expected {size}")
        _check(url, tmp, got, git_blob, sha256)
    return got


def fetch_spec(
    spec: FileSpec,
    folder: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Identity:
    """Fetch a card's file into ``folder``: sources in card order, the first verified copy wins.

    Web pages (``kind = "page"``) are skipped. When every source fails, one line lists why.
    """
    target = Path(folder) / spec.file
    failures: list[str] = []
    for source in spec.sources:
        if not source.downloadable:
            continue
        try:
            return download(
                source.url,
                target,
                git_blob=spec.git_blob,
                sha256=spec.sha256,
                size=spec.size,
                member=source.member,
                progress=progress,
                timeout=timeout,
            )
        except CaffeCompatError as exc:
            failures.append(str(exc))
    if not failures:
        raise CaffeCompatError(f"{spec.file}: the card lists no downloadable source")
    raise CaffeCompatError(
        f"could not download {spec.file} from {len(failures)} source(s): " + " | ".join(failures)
    )
