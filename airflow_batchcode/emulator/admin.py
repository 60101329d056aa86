"""What every emulator shares: the ``/_emulator`` admin routes, request counting, bounded body reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from airflow_batchcode.emulator.contract import MSG_BAD_BODY, ApiError, iso_time, json_response
from airflow_batchcode.emulator.faults import FaultInjector

_decode = msgspec.json.decode


class Clock(Protocol):
    """The emulator's adjustable clock."""

    offset: float

    def now(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


class AdminState(Protocol):
    """What the admin routes need from an emulated service."""

    faults: FaultInjector
    clock: Any

    def stats(self) -> dict[str, Any]: ...


class CountRequests:
    """Counts requests by route template for the stats."""

    def __init__(self, app: ASGIApp, counter: Counter[str]) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                route = scope.get("route")
                path = getattr(route, "path", "<unmatched>")
                self.counter[f"{scope['method']} {path}"] += 1


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, or a 400 once it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(400, MSG_BAD_BODY)
        parts.append(chunk)
    return b"".join(parts)


def install_admin(app: FastAPI, state_of: Callable[[Request], AdminState]) -> None:
    """Add the ``/_emulator`` routes (health, faults, stats, clock) for the state ``state_of`` returns."""

    async def json_object(request: Request) -> dict[str, Any]:
        try:
            data = _decode(await read_limited(request, 64 << 10))
        except (msgspec.DecodeError, RecursionError):
            raise ApiError(400, MSG_BAD_BODY) from None
        if not isinstance(data, dict):
            raise ApiError(400, MSG_BAD_BODY)
        return data

    @app.get("/_emulator/health", include_in_schema=False)
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/_emulator/faults", include_in_schema=False)
    async def get_faults(request: Request) -> Response:
        return json_response(state_of(request).faults.to_json())

    @app.post("/_emulator/faults", include_in_schema=False)
    async def set_faults(request: Request) -> Response:
        changes = await json_object(request)
        try:
            return json_response(state_of(request).faults.update(changes))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    @app.get("/_emulator/stats", include_in_schema=False)
    async def stats(request: Request) -> Response:
        return json_response(state_of(request).stats())

    @app.get("/_emulator/clock", include_in_schema=False)
    async def get_clock(request: Request) -> Response:
        clock = state_of(request).clock
        return json_response({"offset": clock.offset, "now": iso_time(clock.now())})

    @app.post("/_emulator/clock", include_in_schema=False)
    async def advance_clock(request: Request) -> Response:
        data = await json_object(request)
        seconds = data.get("advance")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ApiError(400, "advance must be a number of seconds")
        clock = state_of(request).clock
        try:
            clock.advance(float(seconds))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return json_response({"offset": clock.offset, "now": iso_time(clock.now())})
