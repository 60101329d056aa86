"""Refinery's wire format: the manifest it reads, the answers it gives, what its error statuses mean."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any
from urllib.parse import quote

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    QuotaExceededError,
    ServiceError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.base import ManifestSource, Operation, OperationState, UploadTarget
from airflow_batchcode.services.parsing import (
    is_plain_id,
    json_kind,
    json_object,
    numbers,
    opened,
    require_object,
    segment,
)

DATA_URL_PREFIX = "data:application/json;charset=utf-8,"
_BATCH_LINES = 512
"""Manifest lines converted at a time (their record objects are staged in parallel)."""
_STATES = {
    "accepted": OperationState.IN_PROGRESS,
    "processing": OperationState.IN_PROGRESS,
    "completed": OperationState.COMPLETE,
    "failed": OperationState.FAILED,
}
_PROGRESS_KEYS = ("progress_percent", "tasks_done", "tasks_failed", "total_tasks")


def data_url(occp_text: str, tasks_text: str) -> str:
    """A record's texts as a ``data:`` URL of percent-encoded JSON."""
    payload = json.dumps({"occp_text": occp_text, "tasks_text": tasks_text}, separators=(",", ":"))
    return DATA_URL_PREFIX + quote(payload, safe="")


def _canonical(raw: bytes, line: int) -> tuple[str, str, str | None]:
    record = json_object(raw)
    if record is None:
        raise ConfigurationError(f"Manifest line {line} is not a JSON object: expected a canonical record")
    occp, tasks, rid = record.get("occp_text"), record.get("tasks_text"), record.get("recordId")
    if not isinstance(occp, str) or not isinstance(tasks, str) or not (rid is None or isinstance(rid, str)):
        raise ConfigurationError(
            f"Manifest line {line} is not a canonical record (string occp_text and tasks_text, optional recordId)"
        )
    return occp, tasks, rid


def record_object(occp_text: str, tasks_text: str) -> bytes:
    """A record's texts as the small JSON object staged beside the manifest."""
    return json.dumps({"occp_text": occp_text, "tasks_text": tasks_text}, separators=(",", ":")).encode()


RecordUrl = Callable[[int, str, str], str]
"""Where one record is for the service: (0-based line, occp_text, tasks_text) → its ``data_url``."""


def inline_record(line: int, occp_text: str, tasks_text: str) -> str:
    """The opt-in :data:`RecordUrl`: the texts inside the manifest as a ``data:`` URL."""
    return data_url(occp_text, tasks_text)


def convert_manifest(
    source: ManifestSource, sink: IO[bytes], record_url: RecordUrl = inline_record, *, workers: int = 1
) -> int:
    """Stream a canonical manifest into Refinery's manifest JSONL; return the number of lines.

    Each line becomes ``{"data_url": record_url(...), "metadata": {"line": <0-based>, "record_id": ...}}``.
    With ``workers`` > 1, ``record_url`` (which may upload a record object) runs on that many threads,
    a batch of lines at a time; the lines keep their order.
    """
    count = 0
    with opened(source) as handle, ThreadPoolExecutor(max(1, workers), thread_name_prefix="refinery-records") as pool:
        while batch := [_canonical(raw, count + i) for i, raw in enumerate(itertools.islice(handle, _BATCH_LINES))]:
            lines = range(count, count + len(batch))
            if workers > 1:
                urls = list(pool.map(record_url, lines, (b[0] for b in batch), (b[1] for b in batch)))
            else:
                urls = [record_url(line, occp, tasks) for line, (occp, tasks, _) in zip(lines, batch, strict=True)]
            for line, url, (_, _, rid) in zip(lines, urls, batch, strict=True):
                entry = {"data_url": url, "metadata": {"line": line, "record_id": rid}}
                sink.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
            count += len(batch)
    if count == 0:
        raise ConfigurationError("The manifest is empty: Refinery needs at least one record")
    return count


def parse_created(body: Any) -> UploadTarget:
    """Read the 202 answer of ``POST /v1/jobs``."""
    what = "Refinery create job"
    values = require_object(body, what)
    job_id = values.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise UnexpectedResponseError(f"{what}: job_id is {'missing' if job_id is None else json_kind(job_id)}")
    if not is_plain_id(job_id):
        raise UnexpectedResponseError(f"{what}: job_id {job_id[:80]!r} is not a plain identifier")
    return UploadTarget(operation_id=job_id, upload_url="")


def parse_job(body: Any, job_id: str) -> Operation:
    """Read a job object (``GET /v1/jobs/{id}``) into an :class:`Operation`."""
    what = f"Refinery job {job_id}"
    job = require_object(body, f"{what}: status")
    if "job_id" in job and job["job_id"] != job_id:
        raise UnexpectedResponseError(f"{what}: the service answered about another job")
    raw = job.get("status")
    if not isinstance(raw, str):
        raise UnexpectedResponseError(f"{what}: status is {'missing' if raw is None else json_kind(raw)}")
    state = _STATES.get(raw)
    if state is None:
        raise UnexpectedResponseError(
            f"{what}: unknown status {raw[:80]!r} (expected accepted, processing, completed or failed)"
        )
    error = None
    if state is OperationState.FAILED:
        reason = job.get("error") or job.get("message")
        error = str(reason)[:500] if reason else "the service gave no reason"
    return Operation(
        operation_id=job_id, state=state, error=error, raw_status=raw, progress=numbers(job, _PROGRESS_KEYS)
    )


def job_path(job_id: str) -> str:
    """``/v1/jobs/{id}``, with the id checked so it cannot reshape the URL."""
    return f"/v1/jobs/{segment(job_id, 'Refinery job id')}"


def translate_error(exc: ServiceError, what: str) -> ServiceError:
    """Refinery's meaning of an error status: 403 is an exhausted quota, 404 may be another account's job."""
    kwargs: dict[str, Any] = {
        "status_code": exc.status_code,
        "service_message": exc.service_message,
        "operation_id": exc.operation_id,
        "retry_after": exc.retry_after,
    }
    if isinstance(exc, AuthenticationError) and exc.status_code == 403:
        return QuotaExceededError(
            f"{what}: the Refinery quota is exhausted; raise it or wait for it to reset", **kwargs
        )
    if isinstance(exc, AuthenticationError):
        return AuthenticationError(f"{what}: Refinery refused the API key; check the connection's password", **kwargs)
    if isinstance(exc, NotFoundError):
        return NotFoundError(f"{what}: not found (Refinery also answers 404 for another account's jobs)", **kwargs)
    return exc
