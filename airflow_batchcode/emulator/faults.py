"""Fault injection for the emulators, as pure ASGI middleware.

Faults apply to the service's own routes (``/v1/…``, ``/oauth2/token``) and to presigned
storage (``/_storage/…``), never to ``/_emulator/…`` or the OpenAPI document. Each eligible
request draws one number from ``random.Random(seed)`` and gets at most one fault, so a run is
reproducible for a given seed and request order. Kinds:

``5xx``           answer 500 without carrying out the request (storage: S3 ``InternalError``)
``429``           answer 429 with ``Retry-After`` to this and the next ``burst - 1`` requests
                  (storage: 503 ``SlowDown``)
``slow``          sleep ``slow_seconds``, then carry out the request normally
``lost_response`` carry out the request, then send the status line and headers (with the real
                  ``Content-Length``) and part of the body, and drop the connection
``truncate``      storage GET only: send the headers and half of the body, then drop

An injected API error has the service's own error shape: the middleware's ``error_body`` builds it
from the message (``{"message": ...}`` by default, as ABS's API Gateway answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, get_type_hints

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_batchcode.emulator.flags import FAULTS, setting

KINDS = ("5xx", "429", "slow", "lost_response", "truncate")
_PREFIXES = ("/v1/", "/api/", "/oauth2/token", "/_storage/")
"""Routes faults apply to: every service's API and storage, never the ``/_emulator`` admin routes."""
_NOISE = frozenset({"ASGI callable returned without completing response."})
_JSON = [(b"content-type", b"application/json")]
_XML = [(b"content-type", b"application/xml")]

ErrorBody = Callable[[str], Any]
"""A service's error body (any JSON value) for a message."""


def message_body(message: str) -> dict[str, str]:
    """``{"message": ...}``: the error shape of ABS's API Gateway (and super.ai)."""
    return {"message": message}


@dataclass
class FaultSettings:
    """What to inject and how often; rates are probabilities per eligible request."""

    fault_5xx_rate: float = setting(0.0, "share of 500 answers", group=FAULTS)
    fault_429_rate: float = setting(0.0, "share of 429 bursts", group=FAULTS)
    fault_429_burst: int = setting(3, "429s in a row per burst", group=FAULTS)
    fault_retry_after: int = setting(1, "Retry-After of 429s (s)", group=FAULTS)
    fault_lost_response_rate: float = setting(
        0.0, "share of requests carried out whose response is cut off", group=FAULTS
    )
    fault_truncate_rate: float = setting(0.0, "share of downloads cut in half", group=FAULTS)
    fault_slow_rate: float = setting(0.0, "share of slow answers", group=FAULTS)
    fault_slow_seconds: float = setting(5.0, "delay of slow answers", group=FAULTS)
    fault_only: str | None = setting(None, 'faults only where "METHOD /path" matches', group=FAULTS, metavar="REGEX")

    def validated(self) -> FaultSettings:
        """Return self after checking ranges and the regex; raise ``ValueError`` otherwise."""
        for name in _RATES:
            _check_rate(name, getattr(self, name))
        if self.fault_429_burst < 1:
            raise ValueError("fault_429_burst must be at least 1")
        if self.fault_retry_after < 0 or self.fault_slow_seconds < 0:
            raise ValueError("fault_retry_after and fault_slow_seconds must not be negative")
        if self.fault_only is not None:
            try:
                re.compile(self.fault_only)
            except re.error as exc:
                raise ValueError(f"fault_only is not a valid regular expression: {exc}") from None
        return self


_RATES = ("fault_5xx_rate", "fault_429_rate", "fault_lost_response_rate", "fault_truncate_rate", "fault_slow_rate")


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")


_TYPES: dict[str, Any] = get_type_hints(FaultSettings)
"""Each setting's declared type: what :func:`_coerce` turns a JSON value into."""


class FaultInjector:
    """Decides which fault a request gets and counts what was injected.

    :param settings: the initial settings.
    :param seed: seed of the random generator.
    :param rng: the random generator itself (tests script it); ``random.Random(seed)`` by default.
    """

    def __init__(self, settings: FaultSettings | None = None, seed: int = 0, rng: random.Random | None = None) -> None:
        self.settings = (settings or FaultSettings()).validated()
        self.seed = seed
        self.injected: Counter[str] = Counter()
        self.lost_on: Counter[str] = Counter()
        """Lost responses by route (``METHOD /path/{param}``): tests bound the creates whose answer was lost."""
        self._random = rng or random.Random(seed)
        self._burst_left = 0
        self._only = re.compile(self.settings.fault_only) if self.settings.fault_only else None

    def to_json(self) -> dict[str, Any]:
        """The current settings and seed."""
        return {**asdict(self.settings), "seed": self.seed}

    def update(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change some settings (names with or without the ``fault_`` prefix, and ``seed``).

        A new ``seed`` restarts the random sequence. Raises ``ValueError`` on a bad value.
        """
        current = asdict(self.settings)
        seed = self.seed
        for key, value in changes.items():
            if key == "seed":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError("seed must be an integer")
                seed = value
                continue
            name = key if key.startswith("fault_") else f"fault_{key}"
            if name not in _TYPES:
                raise ValueError(f"unknown fault setting {key!r}")
            current[name] = _coerce(name, value)
        settings = FaultSettings(**current).validated()
        self.settings = settings
        self._only = re.compile(settings.fault_only) if settings.fault_only else None
        if seed != self.seed:
            self.seed = seed
            self._random = random.Random(seed)
        self._burst_left = 0
        return self.to_json()

    def applies_to(self, method: str, path: str) -> bool:
        """True when faults may be injected into ``METHOD path``."""
        if not path.startswith(_PREFIXES):
            return False
        return self._only is None or self._only.search(f"{method} {path}") is not None

    def decide(self, method: str, path: str) -> str | None:
        """Pick the fault for this request (one of :data:`KINDS`), or ``None``."""
        if not self.applies_to(method, path):
            return None
        s = self.settings
        if self._burst_left > 0:
            self._burst_left -= 1
            return self._count("429")
        truncatable = method == "GET" and path.startswith("/_storage/")
        bands = (
            ("5xx", s.fault_5xx_rate),
            ("429", s.fault_429_rate),
            ("slow", s.fault_slow_rate),
            ("lost_response", s.fault_lost_response_rate),
            ("truncate", s.fault_truncate_rate if truncatable else 0.0),
        )
        if not any(rate for _, rate in bands):
            return None
        draw = self._random.random()
        edge = 0.0
        for kind, rate in bands:
            edge += rate
            if draw < edge:
                if kind == "429":
                    self._burst_left = s.fault_429_burst - 1
                return self._count(kind)
        return None

    def _count(self, kind: str) -> str:
        self.injected[kind] += 1
        return kind


def _coerce(name: str, value: Any) -> Any:
    kind = _TYPES[name]
    if name == "fault_only":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError("fault_only must be a string or null")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be an integer")
    return kind(value)


def settings_from(source: Any) -> FaultSettings:
    """Build :class:`FaultSettings` from any object carrying the same attribute names."""
    return FaultSettings(**{f.name: getattr(source, f.name) for f in fields(FaultSettings)})


class _Abort(Exception):
    """Raised into the app to stop it once a dropped response has what it needs."""


class FaultMiddleware:
    """ASGI middleware that injects the faults an :class:`FaultInjector` decides on.

    :param error_body: builds the body of an injected API error from its message, in the service's shape.
    """

    def __init__(self, app: ASGIApp, injector: FaultInjector, error_body: ErrorBody = message_body) -> None:
        self.app = app
        self.injector = injector
        self.error_body = error_body
        quiet_dropped_responses()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = self.injector.decide(scope["method"], scope["path"])
        storage = scope["path"].startswith("/_storage/")
        if kind is None:
            await self.app(scope, receive, send)
        elif kind == "5xx":
            if storage:
                await _xml_error(send, 500, "InternalError", "We encountered an internal error.", {})
            else:
                await _json_error(send, 500, self.error_body("Error performing request"), {})
        elif kind == "429":
            retry = {"retry-after": str(self.injector.settings.fault_retry_after)}
            if storage:
                await _xml_error(send, 503, "SlowDown", "Please reduce your request rate.", retry)
            else:
                await _json_error(send, 429, self.error_body("Too Many Requests"), retry)
        elif kind == "slow":
            await asyncio.sleep(self.injector.settings.fault_slow_seconds)
            await self.app(scope, receive, send)
        elif kind == "lost_response":
            await self._lose(scope, receive, send)
        else:
            await self._truncate(scope, receive, send)

    async def _lose(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Carry the request out, then send the head and at most half of the first chunk."""
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)
            if message["type"] == "http.response.body" and message.get("more_body", False):
                raise _Abort

        with contextlib.suppress(_Abort):
            await self.app(scope, receive, capture)
        route = getattr(scope.get("route"), "path", scope["path"])
        self.injector.lost_on[f"{scope['method']} {route}"] += 1
        if not captured:
            return
        start = captured[0]
        body = b"".join(m.get("body", b"") for m in captured[1:2])
        if not body:
            # A zero Content-Length would make the empty response complete: announce a chunked
            # body instead (the server adds the header) and never send its end.
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            start = {**start, "headers": headers}
        await send(start)
        if body:
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})

    async def _truncate(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Forward the head and the first half of the body, then stop."""
        state = {"left": -1}

        async def forward(message: Message) -> None:
            if message["type"] == "http.response.start":
                length = dict(message.get("headers", [])).get(b"content-length")
                if length is not None and message["status"] in (200, 206):
                    state["left"] = int(length) // 2
                await send(message)
                return
            left = state["left"]
            if left < 0:
                await send(message)
                return
            body = message.get("body", b"")
            if len(body) < left:
                state["left"] = left - len(body)
                await send({**message, "more_body": True})
                return
            await send({"type": "http.response.body", "body": body[:left], "more_body": True})
            raise _Abort

        with contextlib.suppress(_Abort):
            await self.app(scope, receive, forward)


async def _xml_error(send: Send, status: int, code: str, message: str, headers: Mapping[str, str]) -> None:
    body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    await _send(send, status, _XML, body.encode(), headers)


async def _json_error(send: Send, status: int, content: Any, headers: Mapping[str, str]) -> None:
    await _send(send, status, _JSON, msgspec.json.encode(content), headers)


async def _send(
    send: Send, status: int, content_type: list[tuple[bytes, bytes]], body: bytes, headers: Mapping[str, str]
) -> None:
    head = [*content_type, (b"content-length", str(len(body)).encode())]
    head.extend((k.encode(), v.encode()) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in _NOISE


_FILTER = _DropNoise()


def quiet_dropped_responses() -> None:
    """Silence uvicorn's one-line complaint about the responses this module drops on purpose."""
    logger = logging.getLogger("uvicorn.error")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
