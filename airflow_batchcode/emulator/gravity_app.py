"""The Gravity-AI on-demand jobs API, emulated as a FastAPI app (``create_app(config)``).

Routes (documented, Gravity-AI's job-api): ``POST /api/v1/jobs`` (multipart: ``data`` JSON + ``file``),
``GET /api/v1/jobs/latest``, ``GET /api/v1/jobs/{jobId}``, ``PUT /api/v1/jobs/{jobId}`` (rename),
``GET /api/v1/jobs/result-link/{jobId}``. Every answer is the envelope
``{"data", "isError", "errorMessage"}``; the caller's ``X-Api-Key`` picks the tenant.

Decisions the documentation leaves open (the model itself is described in :mod:`gravity_model`):

- **Auth.** A missing or unknown ``X-Api-Key`` → 401 envelope ("An API key is required…" / "Invalid API key").
- **HTTP errors** (envelope with ``isError: true``): 400 for a body that is not ``multipart/form-data``,
  a missing ``data`` or ``file`` part, ``data`` that is not a JSON object, a missing ``mimeType``, a
  malformed mapping, or a rename without a name; 404 for an unknown job id or another tenant's (the
  same answer); 413 for a body over ``max_upload_bytes``; 500 "An unexpected error occurred".
- **Errors inside a 200** (``isError: true``, ``data: null``): an unknown project ``version`` on
  submission; ``result-link`` for a job that is not complete yet ("…is not complete yet…"), that
  failed, or whose output was deleted after ``retention`` ("…is no longer available…").
- **Job failures** (created, then status ``error`` with ``errorMessage``): a ``mimeType`` other than
  ``text/csv``, an empty file, a file that is not UTF-8 CSV, a mapped input without the model's features,
  an ``outputMapping`` naming something the model does not output. Such jobs bill nothing.
- **Status** is spelt as in the documentation's examples: ``incomplete``, ``success``, ``error``, with a
  ``statusMessage``. ``processing_delay`` 0 makes a job ``success`` before the POST answers.
- **Latest** lists the tenant's :data:`LATEST_LIMIT` most recent jobs, newest first.
- **Output** is served by the emulator under ``/_storage/gravity-user-data/…`` behind a presigned link
  in S3's older query form (``AWSAccessKeyId``, ``Expires``, ``Signature``, as in the documentation's
  example) valid ``url_ttl`` seconds, with ``Content-Length`` and one ``Range``; errors there are S3 XML
  (403 ``AccessDenied`` "Request has expired", 403 ``SignatureDoesNotMatch``, 404 ``NoSuchKey``, 416).
- **Uploads** are streamed to disk as they arrive (the ``data`` part, at most 64 KiB, is kept in memory).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from email.utils import formatdate
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from airflow_batchcode.emulator.admin import create_service_app, install_storage_errors
from airflow_batchcode.emulator.common import json_body, read_limited
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import StorageError, json_response
from airflow_batchcode.emulator.files import invalid_range, ranged_file
from airflow_batchcode.emulator.gravity_form import receive_form
from airflow_batchcode.emulator.gravity_service import (
    LATEST_LIMIT,
    MAX_NAME,
    MSG_INTERNAL,
    GravityError,
    GravityService,
    parse_request,
)
from airflow_batchcode.emulator.storage import verify_presigned

__all__ = ["LATEST_LIMIT", "GravityService", "create_app"]

MAX_JSON_BODY = 64 << 10


def _service(request: Request) -> GravityService:
    service: GravityService = request.app.state.service
    return service


def envelope(data: Any, status: int = 200) -> Response:
    """A successful answer."""
    return json_response({"data": data, "isError": False, "errorMessage": None}, status)


def error_body(message: str) -> dict[str, Any]:
    """A failed answer's envelope (sent with status 200 too, for the errors the service reports that way)."""
    return {"data": None, "isError": True, "errorMessage": message}


def _tenant(request: Request) -> str:
    return _service(request).tenant(request.headers.get("x-api-key"))


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await read_limited(request, MAX_JSON_BODY, lambda size: GravityError(400, "The request body is too large"))
    data: dict[str, Any] = json_body(
        raw,
        GravityError(400, "The request body is not valid JSON"),
        GravityError(400, "The request body must be a JSON object"),
    )
    return data


def _install_api(app: FastAPI) -> None:
    @app.post("/api/v1/jobs", tags=["jobs"])
    async def submit(request: Request) -> Response:
        """Submit a job: multipart ``data`` (JSON: ``mimeType`` required; ``version``, ``name``, ``mapping``,
        ``outputMapping``) and ``file``."""
        service = _service(request)
        tenant = _tenant(request)
        target = service.uploads_dir / f"{uuid.uuid4().hex}.part"
        try:
            form = await receive_form(request, target, service.config.max_upload_bytes)
            job_request = parse_request(form.data or b"")
            job = await asyncio.to_thread(service.create_job, tenant, job_request, target, form.filename or "input")
        except GravityError:
            service.counters["uploads"]["refused"] += 1
            raise
        finally:
            target.unlink(missing_ok=True)
        service.counters["uploads"]["accepted"] += 1
        return envelope(service.describe(job))

    @app.get("/api/v1/jobs/latest", tags=["jobs"])
    async def latest(request: Request) -> Response:
        """The caller's most recent jobs, newest first."""
        service = _service(request)
        return envelope([service.describe(job) for job in service.latest(_tenant(request))])

    @app.get("/api/v1/jobs/result-link/{job_id}", tags=["jobs"])
    async def result_link(request: Request, job_id: str) -> Response:
        """A presigned link to the job's output file."""
        service = _service(request)
        job = service.job(_tenant(request), job_id)
        return envelope(service.result_link(job, str(request.base_url)))

    @app.get("/api/v1/jobs/{job_id}", tags=["jobs"])
    async def get_job(request: Request, job_id: str) -> Response:
        """One job."""
        service = _service(request)
        return envelope(service.describe(service.job(_tenant(request), job_id)))

    @app.put("/api/v1/jobs/{job_id}", tags=["jobs"])
    async def rename(request: Request, job_id: str) -> Response:
        """Rename a job: ``{"name": "..."}``."""
        service = _service(request)
        job = service.job(_tenant(request), job_id)
        name = (await _json_object(request)).get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise GravityError(400, f"name must be a non-empty string of at most {MAX_NAME} characters")
        service.rename(job, name)
        return envelope(service.describe(job))


def _install_storage(app: FastAPI) -> None:
    @app.api_route("/_storage/{bucket}/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def get_object(request: Request, bucket: str, key: str) -> Response:
        service = _service(request)
        verify_presigned(request, service.signer, service.clock.now())
        found = service.output_file(bucket, key)
        try:
            handle = open(found[1], "rb") if found else None  # noqa: SIM115 - FileSlice closes it
        except FileNotFoundError:
            handle = None
        if found is None or handle is None:
            raise StorageError(404, "NoSuchKey", "The specified key does not exist.")
        job = found[0]
        headers = {
            "Content-Type": "text/csv",
            "ETag": '"' + hashlib.md5(job.id.encode(), usedforsecurity=False).hexdigest() + '"',
            "Last-Modified": formatdate(job.ready_at, usegmt=True),
            "Accept-Ranges": "bytes",
        }
        response = ranged_file(handle, request.headers.get("range"), headers, invalid_range)
        if request.method == "GET":
            service.counters["downloads"][job.tenant] += 1
        return response


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    """Build the Gravity emulator. ``app.state.service`` is its :class:`GravityService`; call its ``close()``
    when done (the server does)."""
    return create_service_app(
        GravityService(config or EmulatorConfig()),
        title="Gravity-AI on-demand jobs API (emulator)",
        description="Hosted-model jobs over CSV: submit, poll, rename, list, and fetch the output by link.",
        install=(install_storage_errors, _install_api, _install_storage),
        error_body=error_body,
        bad_request="The request is not valid",
        internal=MSG_INTERNAL,
    )
