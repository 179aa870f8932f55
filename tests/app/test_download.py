"""Identity-checked downloads against a real HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable

import pytest
from _http import Handler, Route, Server, send, stall, truncated

from caffe_compat.app.download import download, fetch_spec
from caffe_compat.errors import CaffeCompatError
from caffe_compat.zoo import FileSpec, Source

PAYLOAD = bytes(range(256)) * 4099 + b"tail"  # ~1 MB, crosses the 1 MiB read size


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def server(monkeypatch):
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    srv = Server()
    yield srv
    srv.close()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def one_line_error(call: Callable[[], object]) -> str:
    with pytest.raises(CaffeCompatError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_good_file_is_verified_and_moved_into_place(server, tmp_path):
    server.routes["/w.bin"] = send(PAYLOAD)
    dest = tmp_path / "sub" / "w.bin"
    got = download(server.url("/w.bin"), dest, git_blob=git_blob(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert got.git_blob == git_blob(PAYLOAD) and got.size == len(PAYLOAD)
    assert got.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert [p.name for p in dest.parent.iterdir()] == ["w.bin"]


def test_sha256_and_size_are_checked_too(server, tmp_path):
    server.routes["/w.bin"] = send(PAYLOAD)
    dest = tmp_path / "w.bin"
    download(server.url("/w.bin"), dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert dest.read_bytes() == PAYLOAD
    dest.unlink()
    message = one_line_error(
        lambda: download(server.url("/w.bin"), dest, size=len(PAYLOAD) + 1, progress=False)
    )
    assert f"offers {len(PAYLOAD)} bytes, expected {len(PAYLOAD) + 1}" in message
    assert list(tmp_path.iterdir()) == []


def test_without_content_length_the_identity_is_still_computed(server, tmp_path):
    server.routes["/w.bin"] = send(PAYLOAD, length=False)
    got = download(
        server.url("/w.bin"), tmp_path / "w.bin", git_blob=git_blob(PAYLOAD), progress=False
    )
    assert got.git_blob == git_blob(PAYLOAD)


def test_wrong_identity_is_rejected_and_nothing_is_left(server, tmp_path):
    evil = PAYLOAD[:-1] + b"X"
    server.routes["/w.bin"] = send(evil)
    url = server.url("/w.bin")
    message = one_line_error(
        lambda: download(url, tmp_path / "w.bin", git_blob=git_blob(PAYLOAD), progress=False)
    )
    assert url in message and git_blob(PAYLOAD) in message and git_blob(evil) in message
    assert list(tmp_path.iterdir()) == []


def test_an_html_error_page_is_named_as_such(server, tmp_path):
    server.routes["/w.bin"] = send(b"<!DOCTYPE html><html><body>Sign in</body></html>")
    message = one_line_error(
        lambda: download(
            server.url("/w.bin"), tmp_path / "w.bin", git_blob="0" * 40, progress=False
        )
    )
    assert "HTML page" in message
    assert list(tmp_path.iterdir()) == []


def test_http_errors_are_one_line(server, tmp_path):
    url = server.url("/nothing-here")
    message = one_line_error(lambda: download(url, tmp_path / "w.bin", progress=False))
    assert message == f"{url}: HTTP 404 Not Found"
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_transfer_is_reported_and_removed(server, tmp_path):
    server.routes["/w.bin"] = truncated(PAYLOAD, 300_000)
    url = server.url("/w.bin")
    message = one_line_error(
        lambda: download(url, tmp_path / "w.bin", git_blob=git_blob(PAYLOAD), progress=False)
    )
    assert message.startswith(f"{url}: truncated download") and "300000" in message
    assert list(tmp_path.iterdir()) == []


def test_a_stalled_server_times_out(server, tmp_path):
    server.routes["/w.bin"] = stall(2.0)
    url = server.url("/w.bin")
    message = one_line_error(lambda: download(url, tmp_path / "w.bin", progress=False, timeout=0.3))
    assert url in message and "timed out" in message
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_host_is_one_line(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    server.server_close()  # nothing listens on this port now
    message = one_line_error(
        lambda: download(f"http://127.0.0.1:{port}/w.bin", tmp_path / "w.bin", progress=False)
    )
    assert "cannot connect" in message
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_by_a_verified_one(server, tmp_path):
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"old")
    server.routes["/w.bin"] = send(b"new but wrong")
    one_line_error(
        lambda: download(server.url("/w.bin"), dest, git_blob=git_blob(PAYLOAD), progress=False)
    )
    assert dest.read_bytes() == b"old"
    server.routes["/w.bin"] = send(PAYLOAD)
    download(server.url("/w.bin"), dest, git_blob=git_blob(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_only_the_named_archive_member_is_extracted(server, tmp_path):
    server.routes["/models.zip"] = send(
        zipped({"deploy.prototxt": b"name: 'x'", "age_net.caffemodel": PAYLOAD, "other": b"o" * 99})
    )
    dest = tmp_path / "age_net.caffemodel"
    got = download(
        server.url("/models.zip"),
        dest,
        git_blob=git_blob(PAYLOAD),
        member="age_net.caffemodel",
        progress=False,
    )
    assert got.git_blob == git_blob(PAYLOAD) and dest.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["age_net.caffemodel"]  # archive removed


def test_a_member_in_a_folder_is_found_by_its_file_name(server, tmp_path):
    server.routes["/models.zip"] = send(zipped({"release/models/age_net.caffemodel": PAYLOAD}))
    dest = tmp_path / "age_net.caffemodel"
    download(server.url("/models.zip"), dest, member="age_net.caffemodel", progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_member_problems_are_caught_before_extraction(server, tmp_path):
    server.routes["/models.zip"] = send(
        zipped({"a/age_net.caffemodel": PAYLOAD, "b/age_net.caffemodel": b"x"})
    )
    url = server.url("/models.zip")
    dest = tmp_path / "age_net.caffemodel"
    message = one_line_error(
        lambda: download(url, dest, member="gender_net.caffemodel", progress=False)
    )
    assert "no entry named gender_net.caffemodel" in message and "a/age_net.caffemodel" in message
    message = one_line_error(
        lambda: download(url, dest, member="age_net.caffemodel", progress=False)
    )
    assert "several entries" in message
    message = one_line_error(
        lambda: download(url, dest, member="a/age_net.caffemodel", size=123, progress=False)
    )
    assert f"is {len(PAYLOAD)} bytes, expected 123" in message
    message = one_line_error(
        lambda: download(url, dest, member="a/age_net.caffemodel", max_size=1000, progress=False)
    )
    assert "over the 1000-byte limit" in message
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_archive_is_one_line(server, tmp_path):
    server.routes["/models.zip"] = send(b"PK\x03\x04 not really a zip")
    message = one_line_error(
        lambda: download(server.url("/models.zip"), tmp_path / "m", member="m", progress=False)
    )
    assert "not a valid zip archive" in message
    assert list(tmp_path.iterdir()) == []
    damaged = bytearray(zipped({"m": PAYLOAD[::-1]}))
    damaged[100:160] = bytes(60)  # inside the compressed data: the CRC check catches it
    server.routes["/damaged.zip"] = send(bytes(damaged))
    message = one_line_error(
        lambda: download(server.url("/damaged.zip"), tmp_path / "m", member="m", progress=False)
    )
    assert "not a valid zip archive" in message
    assert list(tmp_path.iterdir()) == []


def test_the_progress_bar_only_draws_on_a_terminal(server, tmp_path, capsys, monkeypatch):
    server.routes["/w.bin"] = send(PAYLOAD)
    download(server.url("/w.bin"), tmp_path / "a.bin", progress=True)
    assert capsys.readouterr().err == ""  # pytest's stderr is no terminal

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    download(server.url("/w.bin"), tmp_path / "b.bin", progress=True)
    drawn = terminal.getvalue()
    assert "downloading b.bin: 100% [" in drawn and "MB/s" in drawn and drawn.endswith("\n")
    terminal.seek(0)
    terminal.truncate()
    download(server.url("/w.bin"), tmp_path / "c.bin", progress=False)
    assert terminal.getvalue() == ""


def test_fetch_spec_falls_back_through_the_sources(server, tmp_path):
    server.routes["/models.zip"] = send(zipped({"w.bin": PAYLOAD}))
    spec = FileSpec(
        file="w.bin",
        git_blob=git_blob(PAYLOAD),
        sources=(
            Source("https://example.invalid/page", "page"),
            Source(server.url("/gone.bin"), "file"),
            Source(server.url("/models.zip"), "zip", "w.bin"),
        ),
    )
    got = fetch_spec(spec, tmp_path, progress=False)
    assert got.git_blob == git_blob(PAYLOAD) and (tmp_path / "w.bin").read_bytes() == PAYLOAD


def test_fetch_spec_reports_every_failed_source_in_one_line(server, tmp_path):
    server.routes["/bad.bin"] = send(b"wrong")
    spec = FileSpec(
        file="w.bin",
        git_blob=git_blob(PAYLOAD),
        sources=(Source(server.url("/gone.bin"), "file"), Source(server.url("/bad.bin"), "file")),
    )
    message = one_line_error(lambda: fetch_spec(spec, tmp_path, progress=False))
    assert message.startswith("could not download w.bin from 2 source(s)")
    assert "HTTP 404" in message and "wrong file" in message
    assert list(tmp_path.iterdir()) == []
    only_pages = FileSpec("w.bin", None, (Source("https://example.invalid/p", "page"),))
    assert "no downloadable source" in one_line_error(lambda: fetch_spec(only_pages, tmp_path))


# --------------------------------------------------------------------------------------------
# A server that misbehaves: drips, overruns, lies in Content-Length, redirects elsewhere.


def drip(data: bytes, every: float, *, length: bool = True) -> Route:
    """Send ``data`` one byte at a time, ``every`` seconds apart (a connection kept alive)."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        if length:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.flush()
        for byte in data:
            try:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            except OSError:
                return  # the client gave up
            time.sleep(every)

    return route


def slow_headers(every: float) -> Route:
    """Never finish the headers: one header byte at a time."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(10_000):
            try:
                handler.wfile.write(b"X")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(every)

    return route


def endless(chunk: bytes, total: int, sent: list[int], *, claim: int | None = None) -> Route:
    """Stream up to ``total`` bytes without (or with a false) Content-Length; count what went."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        if claim is not None:
            handler.send_header("Content-Length", str(claim))
        handler.end_headers()
        while sent[0] < total:
            try:
                handler.wfile.write(chunk)
            except OSError:
                return
            sent[0] += len(chunk)

    return route


def redirect(location: str) -> Route:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def test_a_dripping_server_is_cut_off_at_the_deadline(server, tmp_path):
    server.routes["/w.bin"] = drip(PAYLOAD[:5000], 0.02)  # 100 s at this pace
    url = server.url("/w.bin")
    start = time.monotonic()
    message = one_line_error(
        lambda: download(url, tmp_path / "w.bin", progress=False, timeout=5, deadline=0.8)
    )
    assert time.monotonic() - start < 3.0
    assert url in message and "0.8 s deadline" in message
    assert list(tmp_path.iterdir()) == []


def test_a_deadline_covers_the_headers_too(server, tmp_path):
    server.routes["/w.bin"] = slow_headers(0.02)
    start = time.monotonic()
    message = one_line_error(
        lambda: download(
            server.url("/w.bin"), tmp_path / "w.bin", progress=False, timeout=5, deadline=0.5
        )
    )
    assert time.monotonic() - start < 3.0 and "deadline" in message
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_outgrows_the_cards_size_is_stopped(server, tmp_path):
    sent = [0]
    server.routes["/mean.binaryproto"] = endless(b"x" * 65536, 300 << 20, sent)
    url = server.url("/mean.binaryproto")
    message = one_line_error(
        lambda: download(url, tmp_path / "mean.binaryproto", size=1861, progress=False)
    )
    assert "more than 1861 bytes" in message
    assert sent[0] < 64 << 20  # stopped long before the 300 MB the server had in store
    assert list(tmp_path.iterdir()) == []


def test_without_a_card_size_the_stated_maximum_holds(server, tmp_path):
    sent = [0]
    server.routes["/w.bin"] = endless(b"x" * 65536, 64 << 20, sent)
    message = one_line_error(
        lambda: download(server.url("/w.bin"), tmp_path / "w.bin", progress=False, max_size=1 << 20)
    )
    assert f"more than {1 << 20} bytes" in message
    assert list(tmp_path.iterdir()) == []


def test_content_length_lies(server, tmp_path):
    url = server.url("/w.bin")
    # Claims more than allowed: refused before a byte of the body is read.
    server.routes["/w.bin"] = lambda h: (
        h.send_response(200),
        h.send_header("Content-Length", str(10 << 30)),
        h.end_headers(),
        h.wfile.write(PAYLOAD[:100]),
    )
    message = one_line_error(lambda: download(url, tmp_path / "w.bin", progress=False))
    assert f"offers {10 << 30} bytes, over the {2 << 30}-byte limit" in message
    # Claims less than it sends: only the claimed bytes are taken, and the identity decides.
    sent = [0]
    server.routes["/w.bin"] = endless(PAYLOAD[:1861], 50 << 20, sent, claim=1861)
    message = one_line_error(
        lambda: download(url, tmp_path / "w.bin", size=1861, git_blob="0" * 40, progress=False)
    )
    assert "wrong file" in message and "(1861 bytes)" in message
    # Claims what the card says but sends more, with no Content-Length to stop it.
    server.routes["/w.bin"] = endless(b"y" * 4096, 50 << 20, [0], claim=None)
    assert "more than 1861 bytes" in one_line_error(
        lambda: download(url, tmp_path / "w.bin", size=1861, progress=False)
    )
    # A nonsense Content-Length counts as none; the limit still holds.
    server.routes["/w.bin"] = lambda h: (
        h.send_response(200),
        h.send_header("Content-Length", "-5"),
        h.end_headers(),
        h.wfile.write(b"z" * 5000),
    )
    assert "more than 1861 bytes" in one_line_error(
        lambda: download(url, tmp_path / "w.bin", size=1861, progress=False)
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.invalid/w.bin", "/etc/passwd", "data:,x"]
)
def test_only_http_and_https_urls_are_fetched(url, tmp_path):
    message = one_line_error(lambda: download(url, tmp_path / "w.bin", progress=False))
    assert "only http and https" in message
    assert list(tmp_path.iterdir()) == []


def test_a_redirect_away_from_http_is_refused(server, tmp_path):
    server.routes["/w.bin"] = redirect("ftp://127.0.0.1/w.bin")
    server.routes["/f.bin"] = redirect("file:///etc/passwd")
    server.routes["/ok.bin"] = redirect("/real.bin")
    server.routes["/real.bin"] = send(PAYLOAD)
    message = one_line_error(
        lambda: download(server.url("/w.bin"), tmp_path / "w.bin", progress=False)
    )
    assert "redirect to ftp://127.0.0.1/w.bin refused" in message
    assert "HTTP 302" in one_line_error(
        lambda: download(server.url("/f.bin"), tmp_path / "w.bin", progress=False)
    )
    assert list(tmp_path.iterdir()) == []
    download(server.url("/ok.bin"), tmp_path / "w.bin", git_blob=git_blob(PAYLOAD), progress=False)
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD


def test_archives_and_their_members_are_capped(server, tmp_path):
    server.routes["/models.zip"] = send(zipped({"w.bin": PAYLOAD}))
    url = server.url("/models.zip")
    message = one_line_error(
        lambda: download(
            url, tmp_path / "w.bin", member="w.bin", max_archive_size=1000, progress=False
        )
    )
    assert "over the 1000-byte limit" in message
    message = one_line_error(
        lambda: download(url, tmp_path / "w.bin", member="w.bin", max_size=1000, progress=False)
    )
    assert f"claims {len(PAYLOAD)} bytes, over the 1000-byte limit" in message
    assert list(tmp_path.iterdir()) == []


def test_fetch_spec_removes_what_an_interrupted_download_left(server, tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)  # a process that has exited
    left = [
        tmp_path / f".w.{pid}.0123abcd.partial.bin",  # the file being downloaded
        tmp_path / f".models.{pid}.89abcdef.partial.zip",  # the archive it came in
    ]
    kept = [
        tmp_path / f".w.{os.getpid()}.00000000.partial.bin",  # a download still running
        tmp_path / ".w.partial.bin",  # not one of ours
        tmp_path / "w.bin.partial",
    ]
    for path in left + kept:
        path.write_bytes(b"x")
    server.routes["/models.zip"] = send(zipped({"w.bin": PAYLOAD}))
    spec = FileSpec(
        "w.bin", git_blob(PAYLOAD), (Source(server.url("/models.zip"), "zip", "w.bin"),)
    )
    fetch_spec(spec, tmp_path, progress=False)
    assert sorted(tmp_path.iterdir()) == sorted([*kept, tmp_path / "w.bin"])
