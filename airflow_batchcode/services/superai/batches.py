"""Reading super.ai's batch objects and job lists, and what they say about the operation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.services.base import Operation, OperationState
from airflow_batchcode.services.parsing import require_object
from airflow_batchcode.services.superai.create import encode
from airflow_batchcode.services.superai.settings import identifier

PENDING_STATES = ("SCHEDULED", "IN_PROGRESS", "SUSPENDED")

SETTLED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELED", "EXPIRED"})


def _count(body: Mapping[str, Any], key: str, what: str) -> int:
    """A non-negative integer field (0 when absent or null)."""
    value = body.get(key)
    if value is None:
        return 0
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnexpectedResponseError(f"{what}: {key} is {value!r:.40}, not a non-negative integer")
    return value


def _flag(body: Mapping[str, Any], key: str, what: str) -> bool:
    value = body.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise UnexpectedResponseError(f"{what}: {key} is {'missing' if value is None else repr(value)[:40]}, not a boolean")


def batch_errors(body: Mapping[str, Any]) -> list[str]:
    """The per-input rejections of a batch object, under either spelling the docs use."""
    for key in ("errors_with_filename", "errors_with_file"):
        value = body.get(key)
        if isinstance(value, list):
            return [item if isinstance(item, str) else json.dumps(item) for item in value]
    return []


@dataclass(frozen=True)
class Batch:
    """A job batch object, read.

    :param raw: the object as the service sent it (written as the download's metadata).
    """

    batch_id: str
    processed: bool
    batch_total: int
    total_processed: int
    valid_count: int
    error_message: str | None
    errors: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def invalid(self) -> int:
        """Inputs that did not become jobs."""
        if self.processed and self.batch_total >= self.valid_count:
            return max(self.batch_total - self.valid_count, len(self.errors))
        return len(self.errors)


def parse_batch(body: Any, batch_id: str) -> Batch:
    """Read a job batch object."""
    what = f"super.ai batch {batch_id}"
    values = require_object(body, what)
    message = values.get("error_message")
    return Batch(
        batch_id=batch_id,
        processed=_flag(values, "batch_processed", what),
        batch_total=_count(values, "batch_total", what),
        total_processed=_count(values, "total_processed", what),
        valid_count=_count(values, "valid_count", what),
        error_message=message if isinstance(message, str) and message else None,
        errors=tuple(batch_errors(values)),
        raw=values,
    )


@dataclass(frozen=True)
class JobsPage:
    """One page of jobs; each job has at least a string ``id``, an upper-case ``state`` and ``batch``
    (the batch id it carries, or ``None``)."""

    jobs: list[dict[str, Any]]
    pages: int
    total: int | None


def parse_jobs_page(body: Any, batch_id: str) -> JobsPage:
    """Read one page of a job list (``GET /apps/{app_uuid}/jobs``), for the messages about ``batch_id``.

    Job fields are read under super.ai's camelCase names or the snake_case ones: ``uuid``/``id``/``job_id``,
    ``batchId``/``batch_id``.
    """
    what = f"super.ai jobs of batch {batch_id}"
    values = require_object(body, what)
    items = values.get("jobs")
    if not isinstance(items, list):
        raise UnexpectedResponseError(f"{what}: the response has no list of jobs")
    jobs = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise UnexpectedResponseError(f"{what}: job {index} of the page is not an object")
        state = item.get("state", item.get("status"))
        if not isinstance(state, str) or not state:
            raise UnexpectedResponseError(f"{what}: job {index} of the page has no state")
        raw_id = next((item[key] for key in ("uuid", "id", "job_id") if item.get(key) not in (None, "")), None)
        job_id = identifier(raw_id, "job id", UnexpectedResponseError)
        owner = item.get("batchId", item.get("batch_id"))
        batch = str(owner) if isinstance(owner, str | int) and not isinstance(owner, bool) else None
        jobs.append({**item, "id": job_id, "state": state.upper(), "batch": batch})
    total_key = next((key for key in ("total", "totalElements") if values.get(key) is not None), None)
    return JobsPage(
        jobs=jobs,
        pages=_count(values, "pages", what),
        total=_count(values, total_key, what) if total_key else None,
    )


def of_batch(page: JobsPage, batch_id: str) -> list[dict[str, Any]]:
    """The jobs of a page that carry ``batch_id`` (an app's job list mixes every batch).

    :raises UnexpectedResponseError: the page lists jobs but none carries a batch id: which are the
        batch's cannot be told, and taking none would report a batch with live jobs as complete.
    """
    if page.jobs and all(job["batch"] is None for job in page.jobs):
        raise UnexpectedResponseError(
            f"super.ai jobs of batch {batch_id}: the app's job list gives no batchId (or batch_id) on its "
            f"{len(page.jobs)} jobs, so the batch's own cannot be told apart"
        )
    return [job for job in page.jobs if job["batch"] == batch_id]


def created_since(batch: Batch) -> str | None:
    """The batch's ``created`` time, to the second, as ``createdStartDate`` takes it; ``None`` when unreadable."""
    created = batch.raw.get("created")
    if not isinstance(created, str):
        return None
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pending_count(page: JobsPage) -> int:
    """Jobs matched by a ``size=1`` query: ``total``, or else the number of one-job pages."""
    return page.total if page.total is not None else max(page.pages, len(page.jobs))


def batch_operation(batch: Batch, pending: JobsPage | None) -> Operation:
    """The shared view of a batch: in progress while ingesting or while any job is live.

    :param pending: a ``size=1`` page of the batch's live jobs; ``None`` before ingestion ends or
        when no input was valid.
    """
    progress: dict[str, Any] = {
        "batch_total": batch.batch_total,
        "total_processed": batch.total_processed,
        "valid_count": batch.valid_count,
        "invalid": batch.invalid,
    }
    if not batch.processed:
        return Operation(batch.batch_id, OperationState.IN_PROGRESS, raw_status="ingesting", progress=progress)
    if batch.valid_count == 0:
        reason = batch.error_message or (batch.errors[0] if batch.errors else "the batch holds no valid input")
        return Operation(
            batch.batch_id, OperationState.FAILED, error=reason, raw_status="no_valid_inputs", progress=progress
        )
    live = pending_count(pending) if pending is not None else 0
    progress["jobs_pending"] = live
    progress["jobs_settled"] = max(batch.valid_count - live, 0)
    if live:
        first = pending.jobs[0]["state"] if pending is not None and pending.jobs else "IN_PROGRESS"
        return Operation(batch.batch_id, OperationState.IN_PROGRESS, raw_status=first, progress=progress)
    return Operation(batch.batch_id, OperationState.COMPLETE, raw_status="all_jobs_settled", progress=progress)


def output_line(job: Mapping[str, Any], response: Any) -> bytes:
    """One line of the raw output: the job, the input it coded and its response."""
    given = job.get("input")
    given = given if isinstance(given, dict) else {}
    line = given.get("line", job.get("input_index"))
    if isinstance(line, bool) or not isinstance(line, int):
        raise UnexpectedResponseError(f"super.ai job {job['id']}: neither its input nor the job says its line")
    record_id = given.get("record_id")
    error = next((job[key] for key in ("errorMessage", "error", "error_message") if job.get(key)), None)
    body = {
        "job_id": job["id"],
        "state": job["state"],
        "input": {"line": line, "record_id": record_id if isinstance(record_id, str) else None},
        "response": response,
        "error": error if isinstance(error, str) and error else None,
    }
    return encode(body) + b"\n"


def response_of(body: Any) -> Any:
    """The app's response from a ``GET /jobs/{id}/response`` body (wrapped or bare)."""
    if isinstance(body, dict) and "response" in body:
        return body["response"]
    return body
