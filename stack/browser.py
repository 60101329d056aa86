"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no extra packages.

Debian's ``chromium`` is started with ``--headless --no-sandbox --disable-gpu
--disable-background-networking``; commands go to fd 3 and replies come from fd 4 as
NUL-terminated JSON, as the DevTools protocol's pipe transport defines.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def find_chromium() -> str | None:
    """Path of Debian's ``chromium`` (or a compatible Chrome) on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


_NAVIGATING = ("Inspected target navigated or closed", "Execution context was destroyed", "Cannot find context")
"""DevTools errors of an evaluation cut short by a navigation."""


class BrowserError(RuntimeError):
    """A DevTools command failed or the browser went away."""


class Browser:
    """One headless Chromium with one page; use as a context manager.

    :param executable: the browser binary (:func:`find_chromium` when ``None``).
    :param width: viewport width in CSS pixels.
    :param height: viewport height in CSS pixels.
    """

    def __init__(self, executable: str | None = None, *, width: int = 1400, height: int = 1000) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("chromium not found on PATH")
        self.width, self.height = width, height
        self._profile = tempfile.mkdtemp(prefix="batchcode-chromium-")
        self._next_id = 0
        self._buffer = b""
        self._session: str | None = None
        self.console: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Browser:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def wire() -> None:  # pragma: no cover - in the child before exec
            # move both ends out of the way first, so that neither is overwritten when placed on 3 and 4
            high_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            high_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)
            os.setsid()

        self._process = subprocess.Popen(
            [
                str(self.executable),
                *CHROMIUM_FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile}",
                f"--window-size={self.width},{self.height}",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=wire,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)
            self._session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the browser (its whole process group) and remove its profile."""
        if self._process is not None:
            with contextlib.suppress(Exception):
                self.send("Browser.close", session=False, timeout=5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, 15)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, 9)
                self._process.wait(5)
            self._process = None
            for fd in (self._to_browser, self._from_browser):
                with contextlib.suppress(OSError):
                    os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    # --- protocol -----------------------------------------------------------------------------------------------

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = True, timeout: float = 30
    ) -> dict[str, Any]:
        """Send one DevTools command and return its result (events read meanwhile are kept or dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self._session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if reply.get("method") == "Runtime.consoleAPICalled":
                args = reply["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("no answer from chromium in time")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    # --- page helpers -------------------------------------------------------------------------------------------

    def goto(self, url: str) -> None:
        """Navigate and wait for the document to load."""
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'", timeout=30)

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (promises awaited); return its JSON value."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"JavaScript failed: {result['exceptionDetails'].get('text')} in {expression[:200]}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30, interval: float = 0.25) -> Any:
        """Evaluate ``expression`` until it is truthy; return its value (``True`` for a DOM node)."""
        probe = f"(() => {{ const value = ({expression}); return value instanceof Node ? true : value; }})()"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(probe)
            except BrowserError as exc:
                # the page navigated (a redirect, say) while the probe ran: not there yet, look again
                if not any(sign in str(exc) for sign in _NAVIGATING):
                    raise
                value = None
            if value:
                return value
            time.sleep(interval)
        raise BrowserError(f"timed out waiting for: {expression[:200]}")

    def type_into(self, element: str, text: str) -> None:
        """Focus the element the JavaScript expression ``element`` finds and type ``text`` as a person would."""
        self.wait_for(f"!!({element})")
        self.evaluate(f"(() => {{ const el = {element}; el.focus(); if (el.select) el.select(); }})()")
        self.send("Input.insertText", {"text": text})

    def click(self, element: str) -> None:
        """Click (real mouse events) the middle of the element the JavaScript expression ``element`` finds."""
        self.wait_for(f"!!({element})")
        box = self.evaluate(
            f"(() => {{ const el = {element}; el.scrollIntoView({{block: 'center'}}); "
            "const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            event = {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1}
            if kind == "mouseMoved":
                event = {"type": kind, "x": box[0], "y": box[1]}
            self.send("Input.dispatchMouseEvent", event)

    def text(self) -> str:
        """The page's visible text."""
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """Save a PNG of the page (whole scrollable page when ``full_page``)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", params)["data"]))
        return path
