"""A real HTTP server on 127.0.0.1 with scripted routes, for the download tests (no internet)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable

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


class Handler(http.server.BaseHTTPRequestHandler):
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
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
