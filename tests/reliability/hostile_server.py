"""A small hostile HTTP server for client tests: canned bad answers on a free loopback port.

Routes map ``(METHOD, path)`` to raw ASGI handlers, so an answer can be anything a broken or
malicious service could send: a body that is not JSON, a huge or endless body, a redirect, a
body shorter than its ``Content-Length``. Every request is recorded (method, path, query,
headers) so a test can check what the client sent, and what it did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from airflow_batchcode.emulator.faults import quiet_dropped_responses

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
"""A raw ASGI answer to one request."""

CHUNK = 64 * 1024
HOLD_MAX_SECONDS = 20.0
"""Longest an endless answer keeps its connection open before giving up (tests stay bounded)."""


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Sent:
    """Bytes a streaming answer managed to send before the client went away."""

    body_bytes: int = 0
    disconnected: bool = False
    done: threading.Event = field(default_factory=threading.Event)


def _head(status: int, headers: dict[str, str] | None = None, content_type: str | None = None) -> dict[str, Any]:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if content_type is not None:
        raw.append((b"content-type", content_type.encode()))
    return {"type": "http.response.start", "status": status, "headers": raw}


async def _drain(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


def raw(
    body: bytes,
    *,
    status: int = 200,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> Handler:
    """Answer ``body`` as it is, with a correct ``Content-Length``."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        await send(_head(status, {**(headers or {}), "content-length": str(len(body))}, content_type))
        await send({"type": "http.response.body", "body": body})

    return handler


def json_body(value: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    """Answer ``value`` as JSON."""
    return raw(json.dumps(value).encode(), status=status, headers=headers)


def redirect(location: str, *, status: int = 302) -> Handler:
    """Answer a redirect to ``location``."""
    return raw(b"", status=status, content_type=None, headers={"location": location})


def streamed(chunks: Callable[[], Iterator[bytes]], *, sent: Sent, headers: dict[str, str] | None = None) -> Handler:
    """Stream ``chunks()`` (a 200 JSON answer) until they run out or the client disconnects.

    :param sent: where the number of body bytes sent before the end or the disconnect is kept.
    """

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        try:
            await send(_head(200, headers, "application/json"))
            for chunk in chunks():
                if gone.is_set():
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent.body_bytes += len(chunk)
                await asyncio.sleep(0)
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b""})
        finally:
            sent.disconnected = gone.is_set()
            watcher.cancel()
            sent.done.set()

    return handler


def huge_json(total: int) -> Callable[[], Iterator[bytes]]:
    """Chunks of one syntactically valid status object padded to about ``total`` bytes."""

    def chunks() -> Iterator[bytes]:
        yield b'{"operationStatus": "in_progress", "padding": "'
        left = total
        piece = b"x" * CHUNK
        while left > 0:
            yield piece[: min(CHUNK, left)]
            left -= CHUNK
        yield b'"}'

    return chunks


def gzip_bomb(decoded: int) -> bytes:
    """A gzip body that inflates to ``decoded`` bytes of one JSON string (about 1000:1)."""
    inner = b'{"operationStatus": "in_progress", "padding": "' + b"0" * decoded + b'"}'
    return gzip.compress(inner, compresslevel=9)


def stall(prefix: bytes, *, content_length: int | None = None) -> Handler:
    """Send the head and ``prefix`` of a 200 JSON answer, then nothing more until the client leaves."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        headers = {"content-length": str(content_length)} if content_length is not None else {}
        await send(_head(200, headers, "application/json"))
        await send({"type": "http.response.body", "body": prefix, "more_body": True})
        await _wait_for_disconnect(receive)

    return handler


def silent() -> Handler:
    """Never answer: no status line, no headers, until the client leaves."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        await _wait_for_disconnect(receive)

    return handler


def short_body(body: bytes, *, declared: int, status: int = 200) -> Handler:
    """Announce ``declared`` bytes, send only ``body``, then drop the connection."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        head = {"content-length": str(declared), "accept-ranges": "bytes"}
        await send(_head(status, head, "application/octet-stream"))
        await send({"type": "http.response.body", "body": body, "more_body": True})
        # Returning without finishing the body makes uvicorn close the connection.

    return handler


async def _wait_for_disconnect(receive: Receive) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        async with asyncio.timeout(HOLD_MAX_SECONDS):
            while (await receive())["type"] != "http.disconnect":
                pass


class HostileServer:
    """An ASGI app of canned answers, served by uvicorn in a daemon thread on loopback.

    Unknown routes answer 404 JSON. Use as a context manager; :attr:`base_url` is known
    before start.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.seen: list[Seen] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self, method: str, path: str, handler: Handler) -> None:
        """Answer ``METHOD path`` (query ignored) with ``handler`` from now on."""
        self.routes[(method.upper(), path)] = handler

    def requests_to(self, path: str) -> list[Seen]:
        """The requests received for ``path``."""
        return [seen for seen in self.seen if seen.path == path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        handler = self.routes.get((scope["method"], scope["path"]))
        body = b""
        if handler is None or scope["method"] in ("POST", "PUT"):
            body = await _drain(receive)
        self.seen.append(Seen(scope["method"], scope["path"], scope["query_string"].decode(), headers, body))
        if handler is None:
            handler = json_body({"message": "no such route"}, status=404)
        await handler(scope, receive, send)

    def start(self) -> HostileServer:
        config = uvicorn.Config(
            self, log_level="critical", lifespan="off", access_log=False, timeout_graceful_shutdown=1
        )
        quiet_dropped_responses()
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="hostile-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the hostile server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
