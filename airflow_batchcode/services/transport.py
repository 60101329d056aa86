"""HTTP plumbing shared by every service client: retries, rate limit, size caps, typed errors.

Sync calls go through ``requests``; async calls (the trigger's) through ``httpx``. Service
modules supply the URLs, headers and how to read their error bodies; this module owns the
loop that retries 429/5xx/connection errors with backoff and turns the rest into the
typed errors of :mod:`airflow_batchcode.exceptions`. No message here ever carries a query
string, a token or a request body.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import http.cookiejar
import importlib
import json
import logging
import os
import re
import ssl
import threading
import time
import weakref
import zlib
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from ipaddress import ip_address
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import requests
import urllib3
from requests.adapters import HTTPAdapter

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    IncompleteDownloadError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    ServiceError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.ratelimit import RateLimiter
from airflow_batchcode.services.redact import redact_url
from airflow_batchcode.services.retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after

log = logging.getLogger("airflow_batchcode.services")

CHUNK_BYTES = 1 << 20
"""Read and write size for streamed uploads."""
DOWNLOAD_READ_BYTES = 256 * 1024
"""Read and write size of downloads, into one reused buffer.

Small enough to stay in a core's L2 cache between the socket and the file; a fresh ``bytes``
per read (``iter_content``) cost more in page faults than the copy itself: measured against
the emulator on loopback, 0.3 s of system CPU per GB this way against 0.7-1.5 s.
"""

ErrorReader = Callable[[int, bytes, str], str | None]
"""Extracts the service's own message from an error body: ``(status, body, content_type) -> message``."""


@dataclass(frozen=True)
class HttpSettings:
    """Network behaviour of one client.

    :param connect_timeout: seconds to open a connection.
    :param read_timeout: seconds to wait for each read of a response.
    :param retry: the retry policy for 429, 5xx and connection errors.
    :param max_response_bytes: largest JSON body accepted from an API call.
    :param allow_insecure_http: allow plain ``http`` URLs to hosts other than loopback.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_response_bytes: int = 4 << 20
    allow_insecure_http: bool = False

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


def check_url(url: str, *, allow_insecure_http: bool, what: str) -> None:
    """Refuse URLs that would leak data: only ``https``, or ``http`` to loopback (or when allowed)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise UnexpectedResponseError(f"Refusing {what}: it is not a valid URL") from None
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and (allow_insecure_http or is_loopback(parts.hostname)):
        return
    raise UnexpectedResponseError(
        f"Refusing {what} {redact_url(url)}: only https URLs are accepted "
        "(plain http only to loopback, or with allow_insecure_http in the connection extra)"
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def error_for_status(
    status: int,
    service_message: str | None,
    *,
    what: str,
    operation_id: str | None = None,
    retry_after: float | None = None,
) -> ServiceError:
    """The typed error for an HTTP error status."""
    kwargs: dict[str, Any] = {
        "status_code": status,
        "service_message": service_message,
        "operation_id": operation_id,
        "retry_after": retry_after,
    }
    if status == 429:
        if service_message and "limit exceeded" in service_message.lower():
            return QuotaExceededError(f"{what}: daily request quota exhausted", **kwargs)
        return RateLimitedError(f"{what}: throttled by the service", **kwargs)
    if status in (401, 403):
        return AuthenticationError(f"{what}: not authorised", **kwargs)
    if status == 404:
        return NotFoundError(f"{what}: not found", **kwargs)
    if status == 409:
        return ConflictError(f"{what}: conflict", **kwargs)
    if status >= 500:
        return ServerError(f"{what}: service error", **kwargs)
    return InvalidRequestError(f"{what}: request rejected", **kwargs)


def json_message_reader(*keys: str) -> ErrorReader:
    """An :data:`ErrorReader` for JSON bodies carrying the message under one of ``keys``."""

    def read(status: int, body: bytes, content_type: str) -> str | None:
        try:
            data = json.loads(body)
        except ValueError:
            text = body[:200].decode("utf-8", "replace").strip()
            return text or None
        if isinstance(data, dict):
            for key in keys:
                value = data.get(key)
                if isinstance(value, str) and value:
                    return value
        return None

    return read


def s3_message_reader(status: int, body: bytes, content_type: str) -> str | None:
    """Read ``<Code>`` and ``<Message>`` from an S3 XML error body."""
    text = body[:4096].decode("utf-8", "replace")

    def tag(name: str) -> str:
        start, end = text.find(f"<{name}>"), text.find(f"</{name}>")
        return text[start + len(name) + 2 : end].strip() if 0 <= start < end else ""

    code, message = tag("Code"), tag("Message")
    if code or message:
        return f"{code}: {message}" if code and message else code or message
    return None


class FileBody:
    """A re-readable upload body with a known length, streamed in large chunks.

    ``requests`` sends it with ``Content-Length`` (presigned S3 PUTs refuse chunked
    encoding) and reads it chunk by chunk, so memory stays flat for any file size.
    """

    def __init__(self, source: Path | IO[bytes], *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._source = source
        self._chunk = chunk_bytes
        if isinstance(source, Path):
            self._start = 0
            self._length = source.stat().st_size
        else:
            if not source.seekable():
                raise ConfigurationError("An upload body must be a path or a seekable binary file")
            self._start = source.tell()
            self._length = source.seek(0, os.SEEK_END) - self._start
            source.seek(self._start)
        self.sent = 0

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        self.sent = 0
        if isinstance(self._source, Path):
            with self._source.open("rb") as handle:
                yield from self._read(handle)
        else:
            self._source.seek(self._start)
            yield from self._read(self._source)

    def _read(self, handle: IO[bytes]) -> Iterator[bytes]:
        while chunk := handle.read(self._chunk):
            self.sent += len(chunk)
            yield chunk


class SyncTransport:
    """A ``requests`` session with the retry loop, rate limit and error mapping.

    :param settings: timeouts, retry policy and URL rules.
    :param read_error: extracts the service's message from API error bodies.
    :param limiter: the connection's shared rate limiter (API calls only).
    :param service: the service's name, for messages.
    """

    def __init__(
        self,
        settings: HttpSettings,
        read_error: ErrorReader,
        limiter: RateLimiter,
        *,
        service: str,
    ) -> None:
        self.settings = settings
        self.read_error = read_error
        self.limiter = limiter
        self.service = service
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=8)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def close(self) -> None:
        self.session.close()

    def api_json(
        self,
        method: str,
        url: str,
        *,
        headers: Callable[[], Mapping[str, str]],
        what: str,
        operation_id: str | None = None,
        on_auth_failure: Callable[[], None] | None = None,
        rate_limited: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Call an API endpoint and return its parsed JSON body (``None`` when empty).

        ``headers`` is called before each try so a refreshed token is used; a 401/403 calls
        ``on_auth_failure`` (to drop a cached token) and is retried once.
        """
        cap = self.settings.max_response_bytes

        def consume(response: requests.Response) -> tuple[bytes, str]:
            check_declared_length(response.headers, cap, what)
            return read_capped(response.iter_content(65536), cap, what), response.headers.get("Content-Type", "")

        body, content_type = self.request(
            method,
            url,
            headers=headers,
            what=what,
            operation_id=operation_id,
            on_auth_failure=on_auth_failure,
            rate_limited=rate_limited,
            stream=True,
            consume=consume,
            **kwargs,
        )
        return parse_json(body, what, content_type)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Callable[[], Mapping[str, str]] | None = None,
        what: str,
        operation_id: str | None = None,
        on_auth_failure: Callable[[], None] | None = None,
        rate_limited: bool = False,
        read_error: ErrorReader | None = None,
        body_factory: Callable[[], Any] | None = None,
        consume: Callable[[requests.Response], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Send one request with retries; return the successful (2xx) response.

        Redirects are never followed (a 3xx is an :class:`UnexpectedResponseError`): they
        could carry a token, a manifest or a presigned request to another origin, or to plain
        ``http``, past :func:`check_url`.

        :param body_factory: builds the request body afresh for each try (streamed uploads).
        :param consume: reads the successful response inside the retry loop (so a body cut
            off half way is retried too) and returns what this method then returns.
        """
        policy = self.settings.retry
        reader = read_error or self.read_error
        auth_retried = False
        attempt = 0
        while True:
            attempt += 1
            if rate_limited:
                self.limiter.acquire()
            if body_factory is not None:
                kwargs["data"] = body_factory()
            sent = dict(headers()) if headers else None
            try:
                response = self.session.request(
                    method, url, headers=sent, timeout=self.settings.timeout, allow_redirects=False, **kwargs
                )
                if 300 <= response.status_code < 400:
                    response.close()
                    raise redirect_error(what, response.status_code, response.headers.get("Location"))
                if response.status_code < 400:
                    if consume is None:
                        return response
                    with response:
                        return consume(response)
                with response:
                    body = read_capped(response.iter_content(65536), 65536, what, truncate=True)
            except requests.RequestException as exc:
                failure = TransportError(f"{what}: {method} {redact_url(url)} failed ({describe_exception(exc)})")
                if not policy.can_retry(attempt):
                    raise failure from None
                self._wait(what, attempt, str(failure), policy.delay(attempt))
                continue
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            error = error_for_status(
                response.status_code,
                scrub(reader(response.status_code, body, response.headers.get("Content-Type", "")), sent),
                what=what,
                operation_id=operation_id,
                retry_after=retry_after,
            )
            if isinstance(error, AuthenticationError) and on_auth_failure and not auth_retried:
                auth_retried = True
                on_auth_failure()
                continue
            if not is_retryable(error) or not policy.can_retry(attempt, retry_after):
                raise error
            if retry_after is not None and rate_limited:
                self.limiter.hold_off(retry_after)
            self._wait(what, attempt, str(error), policy.delay(attempt, retry_after))

    def _wait(self, what: str, attempt: int, reason: str, delay: float) -> None:
        log.warning(
            "%s %s: try %d of %d failed (%s); retrying in %.1f s",
            self.service,
            what,
            attempt,
            self.settings.retry.max_attempts,
            reason,
            delay,
        )
        time.sleep(delay)

    def download(self, url: str, sink: IO[bytes], *, what: str, read_error: ErrorReader) -> int:
        """Stream ``url`` into ``sink`` and return the bytes written.

        The body must match its ``Content-Length``; a broken transfer is resumed with a
        ``Range`` request (or restarted when the server ignores it). Half a file is never
        reported as a success.
        """
        check_url(url, allow_insecure_http=self.settings.allow_insecure_http, what="download URL")
        policy = self.settings.retry
        start = sink.tell()
        written = 0
        attempt = 0
        while True:
            attempt += 1
            range_header = {"Range": f"bytes={written}-"} if written else {}
            try:
                response = self.request(
                    "GET", url, headers=partial(dict, range_header), what=what, read_error=read_error, stream=True
                )
                with response:
                    if written and response.status_code != 206:
                        sink.seek(start)
                        sink.truncate()
                        written = 0
                    if response.status_code == 206 and not continues_at(response.headers, written):
                        sink.seek(start)
                        sink.truncate()
                        written = 0
                        raise IncompleteDownloadError(
                            f"{what}: the server sent a range that does not continue the file "
                            f"(Content-Range {response.headers.get('Content-Range', 'missing')[:60]!r})"
                        )
                    expected = expected_length(response.headers, written)
                    for count in copy_body(response, sink):
                        written += count
                if expected is not None and written != expected:
                    raise IncompleteDownloadError(f"{what}: got {written} bytes of {expected} from {redact_url(url)}")
                sink.flush()
                return written
            except (requests.RequestException, IncompleteDownloadError) as exc:
                reason = describe_exception(exc)
                if not policy.can_retry(attempt):
                    raise IncompleteDownloadError(
                        f"{what}: download of {redact_url(url)} broke off after {written} bytes ({reason})"
                    ) from None
                self._wait(what, attempt, reason, policy.delay(attempt))

    def upload(
        self,
        url: str,
        body: FileBody,
        *,
        headers: Mapping[str, str],
        what: str,
        read_error: ErrorReader,
        operation_id: str | None = None,
    ) -> requests.Response:
        """PUT ``body`` to a presigned URL, streamed, with ``Content-Length``."""
        check_url(url, allow_insecure_http=self.settings.allow_insecure_http, what="upload URL")
        response = self.request(
            "PUT",
            url,
            headers=lambda: {**headers, "Content-Length": str(len(body))},
            what=what,
            operation_id=operation_id,
            read_error=read_error,
            body_factory=lambda: body,
        )
        response.close()
        return response


def copy_body(response: requests.Response, sink: IO[bytes]) -> Iterator[int]:
    """Copy a streamed response's body into ``sink``, yielding the size of each write.

    A plain body (a ``Content-Length``, no ``Content-Encoding``, not chunked) is read straight
    from the standard library's response into one reused buffer, which ``sink.write`` must not
    keep (as the ``io`` contract says); any other body goes through ``iter_content``, which
    decompresses. A failed read raises ``requests.ConnectionError``, as ``iter_content`` does.
    """
    stdlib = getattr(response.raw, "_fp", None)
    plain = (
        isinstance(stdlib, http.client.HTTPResponse)
        and declared_length(response.headers) is not None
        and response.headers.get("Content-Encoding", "").strip().lower() in ("", "identity")
        and "chunked" not in response.headers.get("Transfer-Encoding", "").lower()
    )
    if not plain:
        for chunk in response.iter_content(DOWNLOAD_READ_BYTES):
            sink.write(chunk)
            yield len(chunk)
        return
    assert isinstance(stdlib, http.client.HTTPResponse)
    view = memoryview(bytearray(DOWNLOAD_READ_BYTES))
    while True:
        try:
            count = stdlib.readinto(view)
        except (OSError, http.client.HTTPException) as exc:
            raise requests.ConnectionError(exc) from exc
        if not count:
            return
        sink.write(view[:count])
        yield count


class AsyncTransport:
    """The async twin of :class:`SyncTransport` for status polling; never blocks the loop.

    Transports of the same service and timeouts on the same event loop share one
    ``httpx.AsyncClient``: a triggerer running a thousand triggers then keeps a few warm
    keep-alive connections (at most :data:`SHARED_CONNECTIONS` requests in flight) instead of
    a thousand pools that each reconnect on every poll. The client is leased on first use, on
    the loop that uses it (the transport itself may be built in a worker thread), and
    :meth:`aclose` closes it only when no other transport still holds it.
    """

    def __init__(
        self,
        settings: HttpSettings,
        read_error: ErrorReader,
        limiter: RateLimiter,
        *,
        service: str,
    ) -> None:
        self.settings = settings
        self.read_error = read_error
        self.limiter = limiter
        self.service = service
        self._lease: _Lease | None = None
        _warm_up()

    def _leased(self) -> _Lease:
        """The shared clients of the running event loop (leased on first use)."""
        loop = asyncio.get_running_loop()
        lease = self._lease
        if lease is None or lease.loop() is not loop or lease.closed:
            if lease is not None:
                self._lease = None
                lease.release()
            lease = self._lease = _Lease.acquire(loop, _client_key(self.service, self.settings))
        return lease

    async def aclose(self) -> None:
        """Give up this transport's share of the client; the last holder on a loop closes it."""
        lease, self._lease = self._lease, None
        # a client leased on another (finished) loop cannot be closed from this one: it is dropped
        if lease is not None and lease.release() and lease.loop() is asyncio.get_running_loop():
            await lease.aclose()

    async def api_json(
        self,
        method: str,
        url: str,
        *,
        headers: Callable[[], Any],
        what: str,
        operation_id: str | None = None,
        on_auth_failure: Callable[[], None] | None = None,
        rate_limited: bool = True,
        read_error: ErrorReader | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call an API endpoint with retries and return its parsed JSON body.

        ``headers`` may be a coroutine function (to fetch a token asynchronously).
        """
        policy = self.settings.retry
        reader = read_error or self.read_error
        auth_retried = False
        attempt = 0
        while True:
            attempt += 1
            if rate_limited:
                await self.limiter.acquire_async()
            request_headers = headers()
            if asyncio.iscoroutine(request_headers):
                request_headers = await request_headers
            try:
                lease = self._leased()
                async with lease.gate:
                    client = lease.take()
                    try:
                        async with client.stream(method, url, headers=request_headers, **kwargs) as response:
                            if 300 <= response.status_code < 400:
                                raise redirect_error(what, response.status_code, response.headers.get("Location"))
                            failed = response.status_code >= 400
                            cap = 65536 if failed else self.settings.max_response_bytes
                            if not failed:
                                check_declared_length(response.headers, cap, what)
                            async with contextlib.aclosing(decoded_chunks(response, what)) as chunks:
                                body = await read_capped_async(chunks, cap, what, truncate=failed)
                    finally:
                        lease.give(client)
            except httpx.HTTPError as exc:
                failure = TransportError(f"{what}: {method} {redact_url(url)} failed ({describe_exception(exc)})")
                if not policy.can_retry(attempt):
                    raise failure from None
                await self._wait(what, attempt, str(failure), policy.delay(attempt))
                continue
            if response.status_code < 400:
                return parse_json(body, what, response.headers.get("Content-Type", ""))
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            error = error_for_status(
                response.status_code,
                scrub(reader(response.status_code, body, response.headers.get("Content-Type", "")), request_headers),
                what=what,
                operation_id=operation_id,
                retry_after=retry_after,
            )
            if isinstance(error, AuthenticationError) and on_auth_failure and not auth_retried:
                auth_retried = True
                on_auth_failure()
                continue
            if not is_retryable(error) or not policy.can_retry(attempt, retry_after):
                raise error
            if retry_after is not None and rate_limited:
                self.limiter.hold_off(retry_after)
            await self._wait(what, attempt, str(error), policy.delay(attempt, retry_after))

    async def _wait(self, what: str, attempt: int, reason: str, delay: float) -> None:
        log.warning(
            "%s %s: try %d of %d failed (%s); retrying in %.1f s",
            self.service,
            what,
            attempt,
            self.settings.retry.max_attempts,
            reason,
            delay,
        )
        await asyncio.sleep(delay)


_ClientKey = tuple[str, float, float]
_shared_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, _Lease]] = (
    weakref.WeakKeyDictionary()
)
_shared_lock = threading.Lock()
SHARED_CONNECTIONS = 8
"""Requests the transports sharing a lease have in flight at once; later ones wait their turn.

They wait on an ``asyncio.Semaphore`` (O(1) per request) rather than in httpcore's pool, and
each request borrows a client of one connection: httpcore's pool costs O(queued x connections)
plus a readability check of every idle connection on each request and release, which for a
thousand polling triggers came to seconds of CPU (with 8 connections in one pool, ~0.4 ms a poll).
"""


def _client_key(service: str, settings: HttpSettings) -> _ClientKey:
    """Transports that agree on this share a client: one service (so a slow one cannot hold up
    another's polls) and what an ``httpx.AsyncClient`` is built from."""
    return (service, settings.connect_timeout, settings.read_timeout)


class _Lease:
    """The shared clients of one event loop and client key, and how many transports hold them.

    Up to :data:`SHARED_CONNECTIONS` clients (``httpx.AsyncClient``) of one keep-alive connection each,
    made as concurrency calls for them; a request takes the one used last (its connection is
    the likeliest to be warm) and gives it back.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, key: _ClientKey) -> None:
        self.loop = weakref.ref(loop)
        self.key = key
        self.users = 0
        self.closed = False
        self.gate = asyncio.Semaphore(SHARED_CONNECTIONS)
        self.clients: list[httpx.AsyncClient] = []
        self._idle: list[httpx.AsyncClient] = []

    def take(self) -> httpx.AsyncClient:
        """A client for one request (call only while holding :attr:`gate`)."""
        if self._idle:
            return self._idle.pop()
        _, connect_timeout, read_timeout = self.key
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            verify=shared_tls_context(),
            # transports of different credentials share clients: never carry cookies between them
            cookies=http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
        )
        self.clients.append(client)
        return client

    def give(self, client: httpx.AsyncClient) -> None:
        """Return a client :meth:`take` handed out."""
        self._idle.append(client)

    async def aclose(self) -> None:
        self.closed = True
        clients, self.clients, self._idle = self.clients, [], []
        for client in clients:
            await client.aclose()

    @classmethod
    def acquire(cls, loop: asyncio.AbstractEventLoop, key: _ClientKey) -> _Lease:
        """The loop's client for ``key`` (made when there is none, or it was closed), one more user counted."""
        with _shared_lock:
            leases = _shared_clients.setdefault(loop, {})
            lease = leases.get(key)
            if lease is None or lease.closed:
                lease = leases[key] = cls(loop, key)
            lease.users += 1
            return lease

    def release(self) -> bool:
        """Count one user fewer; ``True`` when that was the last (the lease is then no longer shared)."""
        with _shared_lock:
            self.users -= 1
            if self.users > 0:
                return False
            loop = self.loop()
            leases = _shared_clients.get(loop) if loop is not None else None
            if leases is not None and leases.get(self.key) is self:
                del leases[self.key]
            return True


def shared_async_client_count(loop: asyncio.AbstractEventLoop) -> int:
    """How many shared clients ``loop`` holds (for tests and benchmarks)."""
    with _shared_lock:
        return len(_shared_clients.get(loop, {}))


@functools.cache
def _warm_up() -> None:
    """Import what ``httpx`` would otherwise import lazily on the first request, on the event loop.

    The transport is built in a worker thread (see ``BatchCodeHook.get_async_client``), so the
    ~25 ms of module loading happens there instead of stalling every trigger of the triggerer.
    """
    for module in ("anyio._backends._asyncio", "anyio.streams.tls", "httpcore._async.http11"):
        importlib.import_module(module)


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process for every async client.

    Loading the CA bundle costs ~45 ms of CPU and ~850 KB per context; a triggerer running a
    thousand triggers would otherwise hold a thousand copies.
    """
    return httpx.create_ssl_context()


def is_retryable(error: ServiceError) -> bool:
    """429 (but not an exhausted daily quota) and 5xx are worth another try."""
    if isinstance(error, QuotaExceededError):
        return False
    return error.status_code in RETRYABLE_STATUS


_DIGITS = re.compile(r"[0-9]{1,20}")
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20}|\*)")
_URL_QUERY = re.compile(r"""([A-Za-z][A-Za-z0-9+.-]*://[^\s?#'"<>]*)\?[^\s'"<>]*""")
_TIMEOUTS = (requests.Timeout, httpx.TimeoutException, urllib3.exceptions.TimeoutError, TimeoutError)


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The ``Content-Length`` a response announces, or ``None`` when absent or not plain ASCII digits."""
    value = (headers.get("Content-Length") or "").strip()
    return int(value) if _DIGITS.fullmatch(value) else None


def check_declared_length(headers: Mapping[str, str], cap: int, what: str) -> None:
    """Refuse, before reading it, a body whose announced length is over ``cap``."""
    length = declared_length(headers)
    if length is not None and length > cap:
        raise UnexpectedResponseError(f"{what}: response body of {length} bytes is larger than {cap} bytes")


def expected_length(headers: Mapping[str, str], already: int) -> int | None:
    """The total length a (possibly ranged) response promises, or ``None`` if it does not say."""
    length = declared_length(headers)
    return None if length is None else already + length


def continues_at(headers: Mapping[str, str], offset: int) -> bool:
    """True when a 206 answer's ``Content-Range`` starts at ``offset`` and runs to the end of the file."""
    match = _CONTENT_RANGE.fullmatch((headers.get("Content-Range") or "").strip())
    if match is None:
        return False
    first, last, total = match.groups()
    return int(first) == offset and (total == "*" or int(last) + 1 == int(total))


def redirect_error(what: str, status: int, location: str | None) -> UnexpectedResponseError:
    """The error for a 3xx answer: redirects are not followed."""
    target = f" to {redact_url(location)}" if location else ""
    return UnexpectedResponseError(
        f"{what}: the service redirected (HTTP {status}){target}; redirects are not followed"
    )


def scrub(message: str | None, sent_headers: Mapping[str, str] | None) -> str | None:
    """A service's message without the credentials we sent it or URL query strings (an echo must not leak)."""
    if not message:
        return message
    credentials = (sent_headers or {}).get("Authorization") or (sent_headers or {}).get("authorization")
    if credentials:
        for secret in {credentials, credentials.rpartition(" ")[2]}:
            if len(secret) >= 8:
                message = message.replace(secret, "<redacted>")
    return _URL_QUERY.sub(r"\1?<redacted>", message)


def _timed_out(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it wraps, is a timeout (``requests`` reports a read timeout
    in the middle of a body as a ``ConnectionError``)."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, urllib3.exceptions.NewConnectionError):
            continue  # a refused connection, though urllib3 derives it from ConnectTimeoutError
        if isinstance(current, _TIMEOUTS):
            return True
        pending += [arg for arg in current.args if isinstance(arg, BaseException)]
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return False


def describe_exception(exc: BaseException) -> str:
    """A short, secret-free description of a transport exception (no URLs, no query strings)."""
    name = type(exc).__name__
    if isinstance(exc, IncompleteDownloadError):
        return str(exc)
    if _timed_out(exc):
        return f"{name}: timed out"
    return name


def read_capped(chunks: Iterator[bytes], cap: int, what: str, *, truncate: bool = False) -> bytes:
    """Join ``chunks`` up to ``cap`` bytes; beyond it, fail (or cut when ``truncate``)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > cap:
            if truncate:
                return bytes(buffer[:cap])
            raise UnexpectedResponseError(f"{what}: response body larger than {cap} bytes")
    return bytes(buffer)


async def read_capped_async(chunks: Any, cap: int, what: str, *, truncate: bool = False) -> bytes:
    """Async :func:`read_capped`."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > cap:
            if truncate:
                return bytes(buffer[:cap])
            raise UnexpectedResponseError(f"{what}: response body larger than {cap} bytes")
    return bytes(buffer)


async def decoded_chunks(response: httpx.Response, what: str) -> AsyncGenerator[bytes, None]:
    """The body of ``response``, decompressed at most 64 KiB at a time.

    httpx inflates each network read whole, so a small gzip "bomb" can grow to hundreds of MB
    before a size cap sees it; inflating in bounded steps keeps memory flat.
    """
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        async for chunk in response.aiter_raw():
            yield chunk
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnexpectedResponseError(f"{what}: unsupported Content-Encoding {encoding[:40]!r}")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header, detected
    try:
        async for chunk in response.aiter_raw():
            data = chunk
            while data:
                yield inflater.decompress(data, 65536)
                data = inflater.unconsumed_tail
        yield inflater.flush()
    except zlib.error:
        raise UnexpectedResponseError(f"{what}: the response body could not be decompressed ({encoding})") from None


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def parse_json(body: bytes, what: str, content_type: str = "") -> Any:
    """Parse a JSON response body; an empty body is ``None``.

    ``NaN`` and ``Infinity`` are refused as the JSON standard does.
    """
    if not body.strip():
        return None
    try:
        return json.loads(body, parse_constant=_no_constants)
    except ValueError:
        kind = f" ({content_type.split(';')[0].strip()[:60]})" if content_type else ""
        raise UnexpectedResponseError(f"{what}: the service answered with a body that is not JSON{kind}") from None
