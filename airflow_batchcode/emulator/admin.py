"""The frame of every emulator app: its error shape, the ``/_emulator`` admin routes, request counting
and fault injection (:func:`create_service_app` puts them together)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from airflow_batchcode.emulator.common import Clock, EmulatedService, json_body, read_limited
from airflow_batchcode.emulator.contract import MSG_BAD_BODY, ApiError, StorageError, iso_time, json_response, xml_error
from airflow_batchcode.emulator.faults import ErrorBody, FaultInjector, FaultMiddleware, message_body


class AdminState(Protocol):
    """What the admin routes need from an emulated service."""

    faults: FaultInjector
    clock: Clock

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


def install_admin(app: FastAPI, state_of: Callable[[Request], AdminState]) -> None:
    """Add the ``/_emulator`` routes (health, faults, stats, clock) for the state ``state_of`` returns."""

    async def json_object(request: Request) -> dict[str, Any]:
        problem = ApiError(400, MSG_BAD_BODY)
        data: dict[str, Any] = json_body(await read_limited(request, 64 << 10), problem, problem)
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


def install_error_handlers(app: FastAPI, error_body: ErrorBody, *, bad_request: str, internal: str) -> None:
    """Answer every error in the service's own shape: :class:`ApiError` (and its subclasses) with its
    status, request validation with a 400 saying ``bad_request``, routing errors with their status, and
    anything unexpected with a 500 saying ``internal``."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return json_response(error_body(exc.message), exc.status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return json_response(error_body(bad_request), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code if exc.status_code < 500 else 500
        message = str(exc.detail) if status < 500 else internal
        return json_response(error_body(message), status, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return json_response(error_body(internal), 500)


def install_storage_errors(app: FastAPI) -> None:
    """Answer :class:`StorageError` as S3 does, in XML (presigned storage under ``/_storage``)."""

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> Response:
        return xml_error(exc.status, exc.code, exc.message, exc.headers)


def create_service_app(
    service: EmulatedService,
    *,
    title: str,
    description: str,
    install: Iterable[Callable[[FastAPI], None]],
    error_body: ErrorBody = message_body,
    bad_request: str,
    internal: str,
) -> FastAPI:
    """An emulator app around ``service``: error handlers, the routes ``install`` adds, the admin routes,
    request counting and fault injection (whose injected errors take ``error_body``'s shape too).
    ``app.state.service`` holds ``service``.
    """
    app = FastAPI(title=title, version="1.0", description=description)
    app.state.service = service
    install_error_handlers(app, error_body, bad_request=bad_request, internal=internal)
    for step in install:
        step(app)
    install_admin(app, lambda request: request.app.state.service)
    app.add_middleware(CountRequests, counter=service.counters["requests"])
    app.add_middleware(FaultMiddleware, injector=service.faults, error_body=error_body)
    return app
