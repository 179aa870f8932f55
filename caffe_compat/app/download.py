"""Identity-checked downloads with urllib only: a file is either complete and verified, or absent.

Bytes go to a temporary file in the destination folder while SHA-256 and the git blob id are
computed on the fly; only a file whose identity matches is moved into place (``os.replace``, so
readers never see half a file). Every failure (HTTP error, timeout, short read, wrong identity,
missing or oversized archive member) is one line naming the URL, and leaves nothing behind.

A server is not trusted to behave: only http and https URLs are fetched (redirects included);
no more bytes are accepted than the card's size or bound (``max_size`` when the card gives
neither; a zip archive its source's bound, else ``max_archive_size``, and its members the same
sizes as a file); at least ``min_rate`` bytes a second must arrive over every ``stall_window``
seconds (a server dripping a byte a second is cut off after one window, not held to the
deadline); and the whole transfer, headers included, must finish within ``deadline`` seconds. A
watchdog thread enforces both by shutting the sockets down, so a blocked read returns at once
whatever the server does.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .. import __version__
from ..errors import CaffeCompatError
from ..io.atomic import atomic_output, new_partial, remove_stale_partials
from ..io.identity import Identity, IdentityHasher, file_identity
from ..io.sniff import explain, sniff
from ..progress import Progress
from ..zoo import FileSpec, Source

_CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0  # seconds without a byte before giving up
DEFAULT_DEADLINE = 1800.0  # seconds for a whole transfer, however steadily bytes arrive
DEFAULT_MIN_RATE = 4096  # bytes per second, over every stall window
DEFAULT_STALL_WINDOW = 30.0  # seconds
MAX_DOWNLOAD_SIZE = 2 << 30  # a file (or archive member) the card gives no size for: at most 2 GiB
MAX_ARCHIVE_SIZE = 4 << 30  # a zip archive: at most 4 GiB
SCHEMES = ("http", "https")


@contextlib.contextmanager
def _scratch(folder: Path, name: str) -> Iterator[Path]:
    """A temporary file in ``folder`` that is always deleted afterwards (archives); named like
    every partial file, so a later run removes it if this process is killed."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp, _ = new_partial(folder / name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _archive_name(url: str) -> str:
    name = Path(urllib.parse.urlsplit(url).path).name
    return name if name and not name.startswith(".") else "archive.zip"


def _fail(url: str, reason: str) -> CaffeCompatError:
    return CaffeCompatError(reason, path=url)


def _copy(
    source: BinaryIO,
    out: BinaryIO,
    hasher: IdentityHasher | None,
    bar: Progress,
    limit: int | None = None,
    watchdog: _Watchdog | None = None,
) -> None:
    """Copy until EOF; raise ``_TooLarge`` as soon as more than ``limit`` bytes came."""
    read = getattr(source, "read1", source.read)  # whatever has arrived, not a full chunk
    while chunk := read(_CHUNK):
        if watchdog is not None:
            watchdog.received(len(chunk))
        if limit is not None and bar.done + len(chunk) > limit:
            raise _TooLarge(limit)
        out.write(chunk)
        if hasher is not None:
            hasher.update(chunk)
        bar.update(len(chunk))


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


class _Watchdog:
    """Shuts down every socket of a transfer once ``deadline`` seconds have passed, or once
    fewer than ``min_rate`` bytes a second came over the last ``window`` seconds, so a blocked
    read returns at once whatever the server does; ``expired`` says why (empty while fine)."""

    def __init__(self, deadline: float, *, min_rate: float = 0.0, window: float = 0.0) -> None:
        self.seconds, self.min_rate, self.window = deadline, min_rate, window
        self.expired = ""
        self._count = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def received(self, count: int) -> None:
        with self._lock:
            self._count += count

    def _watch(self) -> None:
        start = time.monotonic()
        checks = [w for w in (self.seconds, self.window if self.min_rate > 0 else 0) if w > 0]
        tick = min([0.25, *(w / 8 for w in checks)])
        samples: list[tuple[float, int]] = [(start, 0)]  # (time, bytes so far)
        while not self._stop.wait(max(tick, 0.001)):
            now = time.monotonic()
            if now - start >= self.seconds:
                self._expire(f"not finished within the {self.seconds:g} s deadline")
                return
            if self.min_rate <= 0 or self.window <= 0:
                continue
            with self._lock:
                samples.append((now, self._count))
            while len(samples) > 1 and samples[1][0] <= now - self.window:
                samples.pop(0)  # keep one sample at or before the window's start
            since, before = samples[0]
            came = samples[-1][1] - before
            if since <= now - self.window and came < self.min_rate * self.window:
                self._expire(
                    f"stalled: {came} bytes in the last {self.window:g} s (at least "
                    f"{self.min_rate:g} bytes/s wanted)"
                )
                return

    def _expire(self, why: str) -> None:
        with self._lock:
            self.expired = why
            for sock in self._sockets:
                _shut(sock)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def connection(self, base: type[http.client.HTTPConnection]) -> Any:
        """``base`` whose sockets this watchdog watches from the moment they connect (before
        any TLS handshake or proxy tunnel)."""
        watchdog = self

        class Watched(base):  # type: ignore[valid-type, misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                create = self._create_connection

                def watched(*args: Any, **kwargs: Any) -> socket.socket:
                    sock = create(*args, **kwargs)
                    watchdog.watch(sock)
                    return sock

                self._create_connection = watched

        return Watched


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Watchdog) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self.deadline.connection(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Watchdog) -> None:
        super().__init__()
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> Any:
        connection = self.deadline.connection(http.client.HTTPSConnection)
        return self.do_open(connection, req, context=self._context)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http and https URLs only (urllib also allows ftp)."""

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to {newurl} refused (http and https only)", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(deadline: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's usual chain (proxies from the environment, redirects, HTTP errors) without the
    file, ftp and data handlers, with every connection watched by ``deadline``."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _HTTPHandler(deadline),
        _HTTPSHandler(deadline),
        urllib.request.HTTPDefaultErrorHandler(),
        _Redirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _fetch_to(
    url: str,
    tmp: Path,
    *,
    size: int | None,
    limit: int,
    label: str,
    progress: bool,
    timeout: float,
    deadline: float,
    min_rate: float,
    stall_window: float,
) -> Identity:
    """Stream ``url`` into ``tmp`` (at most ``limit`` bytes, within ``deadline`` seconds, at
    least ``min_rate`` bytes/s over every ``stall_window``); hash while streaming when the size
    is known up front."""
    request = urllib.request.Request(url, headers={"User-Agent": f"caffe-compat/{__version__}"})
    expected: int | None = None
    bar = Progress(None, unit="B", enabled=False)  # replaced once the size is known
    with _Watchdog(deadline, min_rate=min_rate, window=stall_window) as watchdog:
        try:
            with _opener(watchdog).open(request, timeout=min(timeout, deadline)) as response:
                length = response.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                if expected is not None and size is not None and expected != size:
                    raise _fail(url, f"the server offers {expected} bytes, expected {size}")
                if expected is not None and expected > limit:
                    raise _fail(
                        url, f"the server offers {expected} bytes, over the {limit}-byte limit"
                    )
                known = expected if expected is not None else size
                hasher = IdentityHasher(known) if known is not None else None
                bar = Progress(known, label=label, unit="B", enabled=progress, leave=True)
                try:
                    with open(tmp, "wb") as out:
                        _copy(response, out, hasher, bar, limit, watchdog)
                finally:
                    bar.close()
        except _TooLarge as exc:
            raise _fail(url, f"the server sent more than {exc.limit} bytes; stopped") from None
        except urllib.error.HTTPError as exc:
            raise _fail(url, f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            _check_deadline(url, watchdog, bar)
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise _fail(url, f"timed out (no data for {timeout:g} s)") from None
            raise _fail(url, f"cannot connect: {reason}") from None
        except TimeoutError:
            _check_deadline(url, watchdog, bar)
            raise _fail(
                url, f"timed out after {bar.done} bytes (no data for {timeout:g} s)"
            ) from None
        except http.client.IncompleteRead as exc:
            _check_deadline(url, watchdog, bar)
            got = bar.done + len(exc.partial)
            raise _fail(
                url, f"truncated download: the connection closed after {got} bytes"
            ) from None
        except (ConnectionError, http.client.HTTPException) as exc:
            _check_deadline(url, watchdog, bar)
            raise _fail(url, f"connection lost after {bar.done} bytes ({exc})") from None
        except OSError as exc:  # TLS failures, a full disk: still one line naming the URL
            _check_deadline(url, watchdog, bar)
            raise _fail(url, f"download failed after {bar.done} bytes: {exc}") from None
        _check_deadline(url, watchdog, bar)
    if expected is not None and bar.done != expected:
        raise _fail(url, f"truncated download: got {bar.done} of {expected} bytes (Content-Length)")
    if hasher is None or bar.done != hasher.size:
        return file_identity(tmp)
    return hasher.identity()


def _check_deadline(url: str, watchdog: _Watchdog, bar: Progress) -> None:
    if watchdog.expired:
        raise _fail(url, f"{watchdog.expired} ({bar.done} bytes came)")


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
                    _copy(source, out, hasher, bar, info.file_size)
            finally:
                bar.close()
    except _TooLarge:
        raise _fail(url, f"archive member {member} holds more than it declares") from None
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


def _check(url: str, tmp: Path, got: Identity, expected: dict[str, str | None]) -> None:
    """Every identity given must match; the first that does not is named."""
    names = {"git_blob": "git blob", "sha1": "sha1", "sha256": "sha256"}
    wrong = [kind for kind, value in expected.items() if value and getattr(got, kind) != value]
    if not wrong:
        return
    kind = wrong[0]
    expected_text = f"{names[kind]} {expected[kind]}"
    actual = f"{names[kind]} {getattr(got, kind)}"
    with open(tmp, "rb") as handle:
        head = handle.read(4096)
    hint = explain(sniff(head), head, "expected file")
    reason = f"wrong file: expected {expected_text}, got {actual} ({got.size} bytes); not kept"
    raise _fail(url, f"{reason}: {hint}" if hint else reason)


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    git_blob: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    member: str | None = None,
    sha1: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
    max_size: int = MAX_DOWNLOAD_SIZE,
    max_archive_size: int = MAX_ARCHIVE_SIZE,
    min_rate: float = DEFAULT_MIN_RATE,
    stall_window: float = DEFAULT_STALL_WINDOW,
) -> Identity:
    """Download ``url`` to ``dest`` if and only if it has the expected identity (every one of
    ``git_blob``, ``sha1``, ``sha256`` and ``size`` that is given); return it.

    ``member`` means ``url`` is a zip archive: it is fetched to a temporary file beside ``dest``
    and only that member is extracted (matched by path, or by file name when it is unique).
    At most ``size`` bytes are accepted (``max_size`` when None; ``max_archive_size`` for the
    archive itself); ``timeout`` seconds without data, fewer than ``min_rate`` bytes/s over any
    ``stall_window`` seconds, or ``deadline`` seconds in all, end the transfer. ``progress``
    draws a bar on stderr when stderr is a terminal. Raises ``CaffeCompatError``.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise _fail(url, f"only http and https URLs are downloaded, not {scheme or 'a bare path'}")
    dest = Path(dest)
    limit = size if size is not None else max_size
    with atomic_output(dest) as tmp:
        if member is None:
            got = _fetch_to(
                url,
                tmp,
                size=size,
                limit=limit,
                label=f"downloading {dest.name}",
                progress=progress,
                timeout=timeout,
                deadline=deadline,
                min_rate=min_rate,
                stall_window=stall_window,
            )
        else:
            with _scratch(dest.parent, _archive_name(url)) as archive:
                label = f"downloading {Path(url).name or url}"
                _fetch_to(
                    url,
                    archive,
                    size=None,
                    limit=max_archive_size,
                    label=label,
                    progress=progress,
                    timeout=timeout,
                    deadline=deadline,
                    min_rate=min_rate,
                    stall_window=stall_window,
                )
                got = _extract(
                    archive, member, tmp, url=url, size=size, max_size=limit, progress=progress
                )
        if size is not None and got.size != size:
            raise _fail(url, f"got {got.size} bytes, expected {size}")
        _check(url, tmp, got, {"git_blob": git_blob, "sha1": sha1, "sha256": sha256})
    return got


def fetch_spec(
    spec: FileSpec,
    folder: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
    min_rate: float = DEFAULT_MIN_RATE,
    stall_window: float = DEFAULT_STALL_WINDOW,
) -> Identity:
    """Fetch a card's file into ``folder``: sources in card order, the first verified copy wins.

    Web pages (``kind = "page"``) are skipped. When every source fails, one line lists why.
    ``deadline`` and the stall rule apply to each source's transfer; the card's size (or
    bound) caps the file, a zip source's bound its archive.
    """
    return fetch_spec_from(
        spec,
        folder,
        progress=progress,
        timeout=timeout,
        deadline=deadline,
        min_rate=min_rate,
        stall_window=stall_window,
    )[0]


def fetch_spec_from(
    spec: FileSpec,
    folder: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
    min_rate: float = DEFAULT_MIN_RATE,
    stall_window: float = DEFAULT_STALL_WINDOW,
) -> tuple[Identity, Source]:
    """``fetch_spec``, also saying which source the verified copy came from."""
    target = Path(folder) / spec.file
    if target.parent.is_dir():  # files left by an interrupted download
        remove_stale_partials(target)
        for source in spec.sources:
            if source.kind == "zip":
                remove_stale_partials(target.parent / _archive_name(source.url))
    failures: list[str] = []
    for source in spec.sources:
        if not source.downloadable:
            continue
        try:
            identity = download(
                source.url,
                target,
                git_blob=spec.git_blob,
                sha256=spec.sha256,
                sha1=spec.sha1,
                size=spec.size,
                member=source.member,
                progress=progress,
                timeout=timeout,
                deadline=deadline,
                max_size=spec.size_cap or MAX_DOWNLOAD_SIZE,
                max_archive_size=source.max_size or MAX_ARCHIVE_SIZE,
                min_rate=min_rate,
                stall_window=stall_window,
            )
        except CaffeCompatError as exc:
            failures.append(str(exc))
        else:
            return identity, source
    if not failures:
        raise CaffeCompatError(f"{spec.file}: the card lists no downloadable source")
    raise CaffeCompatError(
        f"could not download {spec.file} from {len(failures)} source(s): " + " | ".join(failures)
    )
