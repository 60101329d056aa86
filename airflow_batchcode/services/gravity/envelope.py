"""Gravity's answers: the ``{data, isError, errorMessage}`` envelope, job objects and their statuses."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ServiceError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.base import Operation, OperationState
from airflow_batchcode.services.parsing import is_plain_id, json_kind, numbers, segment

JOBS_PATH = "/api/v1/jobs"


_ENVELOPE_ERRORS: tuple[tuple[tuple[str, ...], type[ServiceError]], ...] = (
    (("api key", "apikey", "unauthori", "forbidden", "not authenticated", "permission"), AuthenticationError),
    (("not found", "does not exist", "no such", "unknown job", "no longer available", "deleted"), NotFoundError),
    (("not complete", "incomplete", "not finished", "still processing", "not ready"), ConflictError),
    (("too many", "rate limit", "throttl"), RateLimitedError),
)


def envelope_error(message: str | None, *, what: str, operation_id: str | None = None) -> ServiceError:
    """The typed error for an envelope with ``isError: true``, chosen by its message."""
    lowered = (message or "").lower()
    kind: type[ServiceError] = InvalidRequestError
    for needles, error in _ENVELOPE_ERRORS:
        if any(needle in lowered for needle in needles):
            kind = error
            break
    return kind(
        f"Gravity {what}: the service reported an error (isError true)",
        service_message=message or "no errorMessage given",
        operation_id=operation_id,
    )


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def unwrap(
    body: Any, what: str, operation_id: str | None = None, clean: Callable[[str | None], str | None] = lambda m: m
) -> Any:
    """The ``data`` of an envelope; a typed error when ``isError`` is true.

    :param clean: removes secrets from the service's message before it goes into an exception.
    """
    if not isinstance(body, dict) or not ({"data", "isError"} & body.keys()):
        raise UnexpectedResponseError(f"Gravity {what}: the answer is not the documented {{data, isError}} envelope")
    flag = body.get("isError")
    if _is_true(flag):
        message = body.get("errorMessage")
        text = str(message)[:500] if message not in (None, "") else None
        raise envelope_error(clean(text), what=what, operation_id=operation_id)
    if flag not in (None, False) and not (isinstance(flag, str) and flag.strip().lower() == "false"):
        raise UnexpectedResponseError(f"Gravity {what}: isError is {json_kind(flag)}, not a boolean")
    return body.get("data")


def parse_job(data: Any, what: str, job_id: str | None = None) -> dict[str, Any]:
    """Check a job object: an object whose ``id`` is a plain identifier (``job_id``'s, when given)."""
    if not isinstance(data, dict):
        raise UnexpectedResponseError(f"{what}: data is {json_kind(data)}, not a job object")
    found = data.get("id")
    if not is_plain_id(found):
        raise UnexpectedResponseError(f"{what}: the job has no usable id")
    if job_id is not None and found != job_id:
        raise UnexpectedResponseError(f"{what}: asked for job {job_id}, got job {found}")
    return data


_STATES = {
    **dict.fromkeys(
        ("incomplete", "pending", "processing", "queued", "running", "inprogress"), OperationState.IN_PROGRESS
    ),
    **dict.fromkeys(("success", "succeeded", "successful", "complete", "completed"), OperationState.COMPLETE),
    **dict.fromkeys(("error", "fail", "failed", "failure"), OperationState.FAILED),
}

PROGRESS_FIELDS = ("recordCount", "recordGroupCount", "billedUsage", "processingTimeMS")


def status_state(raw: str) -> OperationState:
    """The shared state of a Gravity status, spelt either way (``success``, ``Success``, ``In Progress``)."""
    state = _STATES.get(re.sub(r"[\s_-]+", "", raw).lower())
    if state is None:
        raise UnexpectedResponseError(f"Gravity job: unknown status {raw[:80]!r}")
    return state


def job_operation(job: Mapping[str, Any]) -> Operation:
    """A job object as an :class:`Operation`: state, failure reason, and the job's counters as progress."""
    job_id = str(job.get("id"))
    raw = job.get("status")
    if not isinstance(raw, str) or not raw:
        raise UnexpectedResponseError(f"Gravity job {job_id}: status is {json_kind(raw)}, not a string")
    state = status_state(raw)
    message = job.get("statusMessage")
    message = message if isinstance(message, str) and message else None
    error = None
    if state is OperationState.FAILED:
        reason = job.get("errorMessage")
        error = reason if isinstance(reason, str) and reason else message or "the job failed without a message"
    progress: dict[str, Any] = numbers(job, PROGRESS_FIELDS)
    if message and state is not OperationState.FAILED:
        progress["statusMessage"] = message[:200]
    return Operation(operation_id=job_id, state=state, error=error, raw_status=raw, progress=progress)


def job_path(job_id: str) -> str:
    return f"{JOBS_PATH}/{segment(job_id, 'job id')}"
