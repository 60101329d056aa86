"""From an HTTP failure to a typed, secret-free error of :mod:`airflow_batchcode.exceptions`.

Statuses become :class:`~airflow_batchcode.exceptions.ServiceError` subclasses carrying the
service's own message (read from its error body by an :data:`ErrorReader`, then scrubbed of the
credentials we sent and of URL query strings); transport exceptions are described by their type
and whether they timed out, never by their text (which can hold a URL with a signature).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import requests
import urllib3

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConflictError,
    IncompleteDownloadError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    ServiceError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.http.retry import parse_retry_after
from airflow_batchcode.services.redact import redact_url

ErrorReader = Callable[[int, bytes, str], str | None]
"""Extracts the service's own message from an error body: ``(status, body, content_type) -> message``."""

_URL_QUERY = re.compile(r"""([A-Za-z][A-Za-z0-9+.-]*://[^\s?#'"<>]*)\?[^\s'"<>]*""")
_TIMEOUTS = (requests.Timeout, httpx.TimeoutException, urllib3.exceptions.TimeoutError, TimeoutError)


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


def status_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    read_error: ErrorReader,
    sent_headers: Mapping[str, str] | None,
    *,
    what: str,
    operation_id: str | None = None,
) -> ServiceError:
    """The typed error for an error answer: the service's message read from ``body`` and scrubbed of
    what we sent, its ``Retry-After`` parsed."""
    message = read_error(status, body, headers.get("Content-Type", ""))
    return error_for_status(
        status,
        scrub(message, sent_headers),
        what=what,
        operation_id=operation_id,
        retry_after=parse_retry_after(headers.get("Retry-After")),
    )


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


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (in its arguments, as its cause or its context), each once."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [arg for arg in current.args if isinstance(arg, BaseException)]
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


def _timed_out(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it wraps, is a timeout (``requests`` reports a read timeout
    in the middle of a body as a ``ConnectionError``). A refused connection is not one, though urllib3
    derives its ``NewConnectionError`` from ``ConnectTimeoutError``."""
    return any(
        isinstance(current, _TIMEOUTS) and not isinstance(current, urllib3.exceptions.NewConnectionError)
        for current in _chain(exc)
    )


_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (ssl.SSLError, "TLS error"),
    (socket.gaierror, "host not found"),
    (urllib3.exceptions.NameResolutionError, "host not found"),
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
)
"""What the transport exceptions wrap, in words a reader can act on (first match in the chain wins)."""


def describe_exception(exc: BaseException) -> str:
    """A short, secret-free description of a transport exception (no URLs, no query strings):
    its type, and what it wraps when that says more (``ConnectError: connection refused``)."""
    name = type(exc).__name__
    if isinstance(exc, IncompleteDownloadError):
        return str(exc)
    if _timed_out(exc):
        return f"{name}: timed out"
    for current in _chain(exc):
        for kind, words in _CAUSES:
            if isinstance(current, kind):
                return f"{name}: {words}"
    return name
