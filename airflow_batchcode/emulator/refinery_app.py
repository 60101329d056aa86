"""The ASG Refinery batch jobs API, emulated as a FastAPI app.

Routes: ``POST /v1/jobs`` (202), ``GET /v1/jobs/{job_id}``, ``GET /v1/jobs/{job_id}/export``
(``application/x-ndjson``, one ``Range`` honoured), and the shared ``/_emulator`` admin routes.
Every error is ``{"error": "..."}``, as the service documents. The contract and the decisions
the documentation leaves open are in :mod:`airflow_batchcode.emulator.refinery_service`.
"""

from __future__ import annotations

import os
from email.utils import formatdate
from typing import Any, Literal

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from airflow_batchcode.emulator.admin import CountRequests, install_admin, read_limited
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import ApiError, json_response
from airflow_batchcode.emulator.faults import FaultMiddleware
from airflow_batchcode.emulator.files import FileSlice
from airflow_batchcode.emulator.refinery_service import RefineryService
from airflow_batchcode.emulator.storage import parse_range

__all__ = ["RefineryService", "create_app"]

MAX_BODY = 64 << 10
MSG_BAD_BODY = "invalid request body: expected a JSON object"
MSG_INTERNAL = "internal error"

_decode = msgspec.json.decode


class ErrorBody(BaseModel):
    """Every API error."""

    error: str


class AcceptedBody(BaseModel):
    """A job just created."""

    job_id: str
    status: Literal["accepted"]
    message: str


class JobBody(BaseModel):
    """A job's status (credentials are never returned)."""

    job_id: str
    status: Literal["accepted", "processing", "completed", "failed"]
    total_tasks: int
    tasks_done: int
    tasks_failed: int
    progress_percent: float
    created_at: str
    completed_at: str | None
    error: str | None = None
    delivery: dict[str, str] | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 401, 403, 404, 500)}
_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["manifest_url", "label_spec", "credentials"],
                    "properties": {
                        "manifest_url": {"type": "string", "description": "s3://, gs:// or https S3 URL"},
                        "label_spec": {
                            "type": "object",
                            "required": ["question", "options"],
                            "properties": {
                                "question": {"type": "string", "minLength": 1},
                                "options": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                            },
                        },
                        "consensus_threshold": {"type": "integer", "minimum": 2, "maximum": 10, "default": 3},
                        "callback_url": {"type": "string"},
                        "task_type": {"type": "string"},
                        "credentials": {"type": "object", "additionalProperties": {"type": "string"}},
                        "delivery": {
                            "type": "object",
                            "required": ["type", "bucket"],
                            "properties": {"type": {"const": "s3"}, "bucket": {"type": "string"}},
                        },
                    },
                }
            }
        },
    }
}
_EXPORT: dict[int | str, dict[str, Any]] = {
    200: {"description": "Settled task results, one JSON object per line", "content": {"application/x-ndjson": {}}},
    206: {"description": "One byte range of the export"},
    409: {"model": ErrorBody, "description": "The job is not completed yet (or failed)"},
    **_ERRORS,
}


def _service(request: Request) -> RefineryService:
    service: RefineryService = request.app.state.service
    return service


def _tenant(request: Request) -> str:
    return _service(request).tenant(request.headers.get("authorization"))


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return json_response({"error": exc.message}, exc.status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return json_response({"error": MSG_BAD_BODY}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code if exc.status_code < 500 else 500
        message = str(exc.detail) if status < 500 else MSG_INTERNAL
        return json_response({"error": message}, status, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        return json_response({"error": MSG_INTERNAL}, 500)


def _install_api(app: FastAPI) -> None:
    @app.post(
        "/v1/jobs",
        status_code=202,
        tags=["jobs"],
        responses={202: {"model": AcceptedBody}, **_ERRORS},
        openapi_extra=_CREATE_BODY,
    )
    async def create_job(request: Request) -> Response:
        """Create a batch job from a JSONL manifest in S3 or GCS."""
        tenant = _tenant(request)
        try:
            body = _decode(await read_limited(request, MAX_BODY))
        except (msgspec.DecodeError, RecursionError):
            raise ApiError(400, MSG_BAD_BODY) from None
        return json_response(_service(request).create_job(tenant, body), 202)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], responses={200: {"model": JobBody}, **_ERRORS})
    async def get_job(request: Request, job_id: str) -> Response:
        """A job's status and task counts (credentials are never returned)."""
        service = _service(request)
        return json_response(service.describe(service.job_of(_tenant(request), job_id)))

    @app.get("/v1/jobs/{job_id}/export", tags=["jobs"], responses=_EXPORT)
    async def export(request: Request, job_id: str) -> Response:
        """The settled task results of a completed job, as JSONL."""
        service = _service(request)
        job = service.job_of(_tenant(request), job_id)
        path = service.export_path(job)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - FileSlice closes it
        except FileNotFoundError:
            raise ApiError(404, "export expired") from None
        size = os.fstat(handle.fileno()).st_size
        headers = {
            "Content-Type": "application/x-ndjson",
            "Accept-Ranges": "bytes",
            "Last-Modified": formatdate(job.ready_at, usegmt=True),
        }
        span = parse_range(request.headers.get("range"), size)
        if span == (-1, -1):
            handle.close()
            raise ApiError(416, "requested range not satisfiable", {"Content-Range": f"bytes */{size}"})
        if span is None:
            start, length, status = 0, size, 200
        else:
            start, length, status = span[0], span[1] - span[0] + 1, 206
            headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
        headers["Content-Length"] = str(length)
        return FileSlice(handle, start, length, status, headers)


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    """Build the Refinery emulator app; ``app.state.service`` is its :class:`RefineryService`."""
    service = RefineryService(config or EmulatorConfig())
    app = FastAPI(
        title="ASG Refinery batch jobs (emulator)",
        version="1.0",
        description="Batch jobs from JSONL manifests in object storage, with consensus labels, as ASG documents them.",
    )
    app.state.service = service
    _install_handlers(app)
    _install_api(app)
    install_admin(app, _service)
    app.add_middleware(CountRequests, counter=service.counters["requests"])
    app.add_middleware(FaultMiddleware, injector=service.faults)
    return app
