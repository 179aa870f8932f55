"""Identity-checked downloads against a real HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time
import zipfile
from collections.abc import Callable

import pytest

from caffe_compat.app.download import download, fetch_spec
from caffe_compat.errors import CaffeCompatError
from caffe_compat.zoo import FileSpec, Source

PAYLOAD = bytes(range(256)) * 4099 + b"tail"  # ~1 MB, crosses the 1 MiB read size


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


Route = Callable[[http.server.BaseHTTPRequestHandler], None]


def send(data: bytes, *, length: bool = True, status: int = 200) -> Route:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        if length:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


def truncated(data: bytes, keep: int) -> Route:
    """Announce all of ``data`` but close the connection after ``keep`` bytes."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[:keep])
        handler.wfile.flush()
        handler.close_connection = True

    return route


def stall(seconds: float) -> Route:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)

    return route


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        route = self.server.routes.get(self.path)  # type: ignore[attr-defined]
        if route is None:
            self.send_error(404, "Not Found")
        else:
            route(self)

    def log_message(self, *args) -> None:
        pass


class Server:
    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.httpd.routes = {}  # type: ignore[attr-defined]
        self.routes: dict[str, Route] = self.httpd.routes  # type: ignore[attr-defined]
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


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
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
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
