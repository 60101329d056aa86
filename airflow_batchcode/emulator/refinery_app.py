"""The ASG Refinery batch jobs API, emulated as a FastAPI app.

Routes: ``POST /v1/jobs`` (202), ``GET /v1/jobs/{job_id}``, ``GET /v1/jobs/{job_id}/export``
(``application/x-ndjson``, one ``Range`` honoured), and the shared ``/_emulator`` admin routes.
Every error is ``{"error": "..."}``, as the service documents. The contract and the decisions
the documentation leaves open are in :mod:`airflow_batchcode.emulator.refinery_service`.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.responses import Response

from airflow_batchcode.emulator.admin import create_service_app
from airflow_batchcode.emulator.common import json_body, read_limited
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import ApiError, json_response
from airflow_batchcode.emulator.files import ranged_file
from airflow_batchcode.emulator.refinery_service import RefineryService

__all__ = ["RefineryService", "create_app"]

MAX_BODY = 64 << 10
MSG_BAD_BODY = "invalid request body: expected a JSON object"
MSG_INTERNAL = "internal error"


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


def error_body(message: str) -> dict[str, str]:
    """Refinery's error shape: ``{"error": ...}``."""
    return {"error": message}


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
        body = json_body(await read_limited(request, MAX_BODY), ApiError(400, MSG_BAD_BODY))
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
            handle = open(path, "rb")  # noqa: SIM115 - the answer closes it
        except FileNotFoundError:
            raise ApiError(404, "export expired") from None
        headers = {
            "Content-Type": "application/x-ndjson",
            "Accept-Ranges": "bytes",
            "Last-Modified": formatdate(job.ready_at, usegmt=True),
        }
        return ranged_file(
            handle,
            request.headers.get("range"),
            headers,
            lambda extra: ApiError(416, "requested range not satisfiable", extra),
        )


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    """Build the Refinery emulator app; ``app.state.service`` is its :class:`RefineryService`."""
    return create_service_app(
        RefineryService(config or EmulatorConfig()),
        title="ASG Refinery batch jobs (emulator)",
        description="Batch jobs from JSONL manifests in object storage, with consensus labels, as ASG documents them.",
        install=(_install_api,),
        error_body=error_body,
        bad_request=MSG_BAD_BODY,
        internal=MSG_INTERNAL,
    )
