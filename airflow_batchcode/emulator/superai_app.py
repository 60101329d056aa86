"""super.ai's job batch API, emulated as a FastAPI app: ``create_app(config)``.

State lives in :class:`~airflow_batchcode.emulator.superai_service.SuperAiService` (``app.state.service``).

Documented contract kept (super.ai's "The job batch object" documentation):

- every call under ``/v1`` carries ``API-KEY``; errors are ``{"message": ...}``;
- ``POST /v1/apps/{app_uuid}/jobs`` ``{inputs: [...] | inputsFileUrl, callbackUrl?, metadata?, tags?}`` →
  202 ``{"message", "batch_id"}``; ingestion then runs in the background;
- ``GET /v1/apps/{app_uuid}/batches/{batch_id}`` → the job batch object (``app_uuid, batch_id, batch_total,
  created, invalid_index, total_processed, valid_count, batch_processed, error_message, errors_with_filename``);
- ``GET /v1/jobs/{job_id}``, ``GET /v1/jobs/{job_id}/response``, ``POST /v1/jobs/{job_id}/cancel``;
- inline inputs up to 4 MB; non-strict mode: valid inputs become jobs, invalid ones are listed as
  ``"{filename}, {error_message}"`` CSV tuples.

Assumed where the documents are silent (the client, ``services/superai/``, assumes the same):

- ``GET /v1/apps/{app_uuid}/jobs`` lists the app's jobs (public docs): ``page`` from 0, ``size`` 1 to 500,
  ``statusIn`` repeated (or comma-separated), ``sortBy``, ``orderBy`` (asc/desc), ``createdStartDate``,
  ``createdEndDate``, ``completedStartDate``, ``completedEndDate`` → ``{"jobs", "page", "size", "pages", "total"}``;
  a batch's jobs show once the batch is processed, oldest batch first and in input order.
- ``GET /v1/apps/{app_uuid}/batches`` lists the caller's batches in the app (what super.ai's client calls; the
  shape, a JSON list of job batch objects, is an assumption).
- A create with a single valid input also answers that job's ``uuid`` (super.ai's client documents it).
- Calls super.ai has but the emulator does not answer 501 ``{"message": "... is not emulated"}``.
- **Auth**: no ``API-KEY`` → 401 "Missing API key…"; an unknown key → 403 "Invalid API key". Keys map to tenants
  (``api_keys``); any well-formed UUID is an app of the caller's tenant (a malformed one → 404 "App not found").
  Another tenant's (or another app's) batch → 404 "Batch not found"; another tenant's job → 404 "Job not found".
- **Size**: a body over 4 MiB (or ``max_upload_bytes`` when smaller) → 413
  "Inputs size exceeds the maximum size allowed: {size} > 4 MB", in the style of the documented size errors.
- **Validation** (the "occupation coder" data program's input schema ``{line?, record_id?, job_title, duties?,
  topic?}``): an input that is not an object, has no non-blank ``job_title``, a ``duties`` that is not a string,
  more than 300 characters across both texts, or a ``topic`` other than ``anzsco``/``osca`` (default ``anzsco``)
  is invalid. Its "filename" is the input's ``line`` when it carries an integer one, else its index in
  ``inputs``. ``invalid_index`` (an integer, as the seed says) is the first invalid index, -1 when none, and
  ``error_message`` its error.
  A batch with no valid input is processed with ``valid_count`` 0.
- **inputsFileUrl**: accepted, but the emulator reaches no outside storage: the batch ends with the documentation's own
  error, "Error occurred while fetching the document:{url}, maximum retries exceeded.".
- **Timeline** (emulator clock, ``processing_delay`` = d after creation): ``batch_processed`` from d/4 (until then
  ``total_processed`` and ``valid_count`` are 0 and no job is visible); jobs SCHEDULED until d/2, IN_PROGRESS until
  d, then COMPLETED, or FAILED for a deterministic share ``record_failure_rate`` of inputs (by a hash of the input).
  ``total_processed`` counts the jobs created. SUSPENDED and EXPIRED are never produced.
- **Responses**: ``GET /v1/jobs/{id}/response`` → ``{"job_id", "state", "response"}``, where ``response`` is the
  occupation coder's output, ``{"code", "label", "confidence"}`` or ``{"code": null, "suggestions": [{"code",
  "label", "confidence"}, ...]}`` (the coding model of ``emulator/coding_model.py``); 409 for a job that is not
  COMPLETED; 404 once ``retention`` has passed since completion (the job stays COMPLETED).
- **Cancel**: SCHEDULED, IN_PROGRESS or SUSPENDED → CANCELED (the job object is returned); otherwise 409.
- Job objects use camelCase as super.ai's API does: ``{"uuid", "batchId", "state", "createdDate", "completedDate",
  "metadata", "tags", "input", "errorMessage"}`` (the names beyond ``state`` are assumptions to check).

Admin routes (``/_emulator/...``), request counting and fault injection are those of every emulator.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from airflow_batchcode.emulator.admin import create_service_app
from airflow_batchcode.emulator.common import json_body, read_limited
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import ApiError, json_response
from airflow_batchcode.emulator.superai_service import (
    JOB_STATES,
    MAX_INPUTS_BYTES,
    MAX_PAGE_SIZE,
    JobQuery,
    SuperAiService,
)

__all__ = ["SuperAiService", "create_app"]

MSG_BAD_BODY = "Invalid request body"
SORT_FIELDS = ("id", "createdDate", "completedDate", "state")
"""``sortBy`` values taken (an assumption: the docs name the parameter, not its values); jobs always come
oldest batch first, in input order, ``orderBy=desc`` reverses that."""
MSG_INTERNAL = "Internal server error"
_DRAIN_LIMIT = 64 << 20
"""An oversized body is read (and dropped) up to this size so the client gets the 413 instead of a reset."""


def _service(request: Request) -> SuperAiService:
    service: SuperAiService = request.app.state.service
    return service


def _tenant(request: Request) -> str:
    return _service(request).tenant(request.headers.get("api-key"))


def _too_large(size: int, limit: int) -> ApiError:
    shown = "4 MB" if limit == MAX_INPUTS_BYTES else f"{limit} bytes"
    return ApiError(413, f"Inputs size exceeds the maximum size allowed: {size} > {shown}")


def _create_body(raw: bytes) -> dict[str, Any]:
    """The create call's body, shape-checked (each input is checked later, during ingestion)."""
    body: dict[str, Any] = json_body(
        raw, ApiError(400, f"{MSG_BAD_BODY}: not JSON"), ApiError(400, f"{MSG_BAD_BODY}: expected a JSON object")
    )
    has_inputs, has_url = body.get("inputs") is not None, body.get("inputsFileUrl") is not None
    if has_inputs == has_url:
        raise ApiError(400, f"{MSG_BAD_BODY}: send exactly one of inputs and inputsFileUrl")
    if has_inputs and (not isinstance(body["inputs"], list) or not body["inputs"]):
        raise ApiError(400, f"{MSG_BAD_BODY}: inputs must be a non-empty list")
    if has_url and (not isinstance(body["inputsFileUrl"], str) or not body["inputsFileUrl"]):
        raise ApiError(400, f"{MSG_BAD_BODY}: inputsFileUrl must be a URL")
    if not isinstance(body.get("callbackUrl", ""), str | None):
        raise ApiError(400, f"{MSG_BAD_BODY}: callbackUrl must be a string")
    if not isinstance(body.get("metadata", {}), dict | None):
        raise ApiError(400, f"{MSG_BAD_BODY}: metadata must be an object")
    tags = body.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ApiError(400, f"{MSG_BAD_BODY}: tags must be a list of strings")
    return body


def _number(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return int(text)


def _states(request: Request) -> frozenset[str] | None:
    given = [s.strip().upper() for value in request.query_params.getlist("statusIn") for s in value.split(",")]
    given = [s for s in given if s]
    if not given:
        return None
    unknown = sorted(set(given) - set(JOB_STATES))
    if unknown:
        raise ApiError(400, f"Unknown job state {unknown[0][:40]!r}: expected one of {', '.join(JOB_STATES)}")
    return frozenset(given)


def _date(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 date-time, e.g. 2026-01-01T00:00:00Z") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _job_query(request: Request) -> JobQuery:
    """The documented query of the app's job list: ``page`` from 0, ``size`` up to 500, ``statusIn``,
    ``sortBy``, ``orderBy`` and the created / completed date windows."""
    order = request.query_params.get("orderBy", "asc").lower()
    if order not in ("asc", "desc"):
        raise ApiError(400, "orderBy must be asc or desc")
    sort_by = request.query_params.get("sortBy", "id")
    if sort_by not in SORT_FIELDS:
        raise ApiError(400, f"sortBy must be one of {', '.join(SORT_FIELDS)}")
    return JobQuery(
        page=_number(request, "page", 0, 0, 1_000_000),
        size=_number(request, "size", 100, 1, MAX_PAGE_SIZE),
        states=_states(request),
        descending=order == "desc",
        created=(_date(request, "createdStartDate"), _date(request, "createdEndDate")),
        completed=(_date(request, "completedStartDate"), _date(request, "completedEndDate")),
    )


def _install_not_emulated(app: FastAPI) -> None:
    """Every other ``/v1`` call answers 501 ``{"message"}``: super.ai has it, the emulator does not."""

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def not_emulated(request: Request, rest: str) -> Response:
        _tenant(request)
        raise ApiError(501, f"{request.method} /v1/{rest[:100]} is not emulated")


def _install_api(app: FastAPI) -> None:
    @app.post("/v1/apps/{app_uuid}/jobs", status_code=202, tags=["jobs"])
    async def create_jobs(request: Request, app_uuid: str) -> Response:
        """Create one job per input, grouped in a new batch (ingested asynchronously)."""
        service = _service(request)
        tenant = _tenant(request)
        app_id = service.app(app_uuid)
        body = _create_body(
            await read_limited(
                request, service.body_limit, lambda size: _too_large(size, service.body_limit), drain=_DRAIN_LIMIT
            )
        )
        return json_response(service.create_batch(tenant, app_id, body), 202)

    @app.get("/v1/apps/{app_uuid}/batches/{batch_id}", tags=["batches"])
    async def get_batch(request: Request, app_uuid: str, batch_id: str) -> Response:
        """The job batch object."""
        service = _service(request)
        batch = service.batch(_tenant(request), service.app(app_uuid), batch_id)
        return json_response(service.batch_json(batch))

    @app.get("/v1/apps/{app_uuid}/batches", tags=["batches"])
    async def list_batches(request: Request, app_uuid: str) -> Response:
        """The caller's batches in this app, oldest first."""
        service = _service(request)
        return json_response(service.list_batches(_tenant(request), service.app(app_uuid)))

    @app.get("/v1/apps/{app_uuid}/jobs", tags=["jobs"])
    async def list_jobs(request: Request, app_uuid: str) -> Response:
        """A page of the app's jobs (super.ai's documented listing), filtered by state and dates."""
        service = _service(request)
        tenant, app_id = _tenant(request), service.app(app_uuid)
        return json_response(service.list_jobs(tenant, app_id, _job_query(request)))

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    async def get_job(request: Request, job_id: str) -> Response:
        """One job object."""
        service = _service(request)
        return json_response(service.job_json(service.job(_tenant(request), job_id)))

    @app.get("/v1/jobs/{job_id}/response", tags=["jobs"])
    async def get_job_response(request: Request, job_id: str) -> Response:
        """A completed job's response."""
        service = _service(request)
        return json_response(service.response(service.job(_tenant(request), job_id)))

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"])
    async def cancel_job(request: Request, job_id: str) -> Response:
        """Cancel a live job."""
        service = _service(request)
        return json_response(service.cancel(service.job(_tenant(request), job_id)))


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    """Build the super.ai emulator app; ``app.state.service`` is its :class:`SuperAiService` (call ``close()``)."""
    return create_service_app(
        SuperAiService(config or EmulatorConfig()),
        title="super.ai job batches (emulator)",
        description="Job batches of one data program (the occupation coder), as super.ai documents them.",
        install=(_install_api, _install_not_emulated),
        bad_request=MSG_BAD_BODY,
        internal=MSG_INTERNAL,
    )
