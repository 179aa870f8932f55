"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages ending in NUL on file descriptors 3 and 4; no port, no websocket library).

``open_page`` loads a file and records what a person could not see: console errors, uncaught
exceptions, log entries of level error (a Content-Security-Policy refusal is one), and every
request the page made other than for itself or ``data:`` URLs. Used by the report page's browser
tests and by docs/make_screenshots.py.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",  # root in containers
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--mute-audio",
    "--hide-scrollbars",
)


# Puts the pipe ends on fds 3 and 4, where --remote-debugging-pipe expects them, then execs.
TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execvp(sys.argv[3], sys.argv[3:])"
)


def find_chromium() -> str | None:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageVisit:
    url: str
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, error logs
    requests: list[str] = field(default_factory=list)  # URLs other than the page and data:
    screenshot: bytes = b""
    values: dict[str, Any] = field(default_factory=dict)  # the expressions evaluated


class Browser:
    """One Chromium process; ``with Browser() as b: b.open_page(path, ...)``."""

    def __init__(self, binary: str | None = None, timeout: float = 60.0) -> None:
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError("chromium not installed")
        self.timeout = timeout
        self._next = 0
        self._buffer = b""
        self._events: list[dict] = []

    def __enter__(self) -> Browser:
        self._profile = tempfile.TemporaryDirectory(prefix="caffe-compat-chromium-")
        pipe_in, self._to_chrome = os.pipe()
        self._from_chrome, pipe_out = os.pipe()
        # The child's ends above fd 10, so moving them to 3 and 4 cannot clobber one another.
        child_in, child_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (pipe_in, pipe_out))
        os.close(pipe_in)
        os.close(pipe_out)
        command = [
            self.binary,
            *FLAGS,
            f"--user-data-dir={self._profile.name}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self._process = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, str(child_in), str(child_out), *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(child_in, child_out),
        )
        os.close(child_in)
        os.close(child_out)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):  # already gone: nothing to close
            self.call("Browser.close")
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self._profile.cleanup()

    # --- the protocol ---------------------------------------------------------------------

    def _send(self, method: str, params: dict | None, session: str | None) -> int:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        return self._next

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise ConnectionError("chromium closed its pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._events.append(message)

    def wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, event in enumerate(self._events):
            if event.get("method") == method and event.get("sessionId") == session:
                return self._events.pop(i)
        while True:
            message = self._read(deadline)
            if message.get("method") == method and message.get("sessionId") == session:
                return message
            self._events.append(message)

    # --- a page ---------------------------------------------------------------------------

    def open_page(
        self,
        path: str | os.PathLike[str],
        *,
        width: int = 1200,
        height: int = 900,
        full_page: bool = False,
        evaluate: dict[str, str] | None = None,
        settle_s: float = 0.3,
    ) -> PageVisit:
        """Load ``path`` (file://), evaluate each named expression, take a screenshot."""
        url = Path(path).resolve().as_uri()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        time.sleep(settle_s)
        visit = PageVisit(url)
        for name, expression in (evaluate or {}).items():
            result = self.call(
                "Runtime.evaluate",
                {"expression": expression, "returnByValue": True},
                session=session,
            )
            if "exceptionDetails" in result:
                visit.errors.append(f"evaluating {name}: {result['exceptionDetails']}")
            visit.values[name] = result.get("result", {}).get("value")
        shot: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
            shot["clip"] = {
                "x": 0,
                "y": 0,
                "width": width,
                "height": min(size["height"], 16000),
                "scale": 1,
            }
            shot["captureBeyondViewport"] = True
        visit.screenshot = base64.b64decode(
            self.call("Page.captureScreenshot", shot, session=session)["data"]
        )
        self._collect(visit, session)
        self.call("Target.closeTarget", {"targetId": target})
        return visit

    def _collect(self, visit: PageVisit, session: str) -> None:
        for event in self._events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                texts = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
                visit.errors.append("console: " + " ".join(texts))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text")
                visit.errors.append(f"exception: {text}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                visit.errors.append(f"log: {params['entry'].get('text')}")
            elif method == "Network.requestWillBeSent":
                requested = params["request"]["url"]
                if requested != visit.url and not requested.startswith("data:"):
                    visit.requests.append(requested)
        self._events.clear()
