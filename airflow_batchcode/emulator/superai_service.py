"""The super.ai emulator's state: tenants, batches, jobs, their timelines and the occupation coder's responses.

Request handlers run on the event loop; ingestion (validating every input and creating its job) runs on a
worker pool and publishes a batch's jobs under :attr:`SuperAiService.lock`. Job states are computed on read
from the batch's creation time, the clock and the job's own facts (failure, cancellation), as the ABS
emulator does. See :mod:`airflow_batchcode.emulator.superai_app` for the contract and its assumptions.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_batchcode.emulator.coding_model import CodingModel, load_models
from airflow_batchcode.emulator.common import EmulatedService
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import ApiError, iso_time

MAX_INPUTS_BYTES = 4 * 1024 * 1024
"""Largest create request body (the documented 4 MB of inline inputs, read as MiB: lenient on input)."""
MAX_TEXT = 300
MAX_PAGE_SIZE = 500
DEFAULT_TOPIC = "anzsco"
LIVE_STATES = frozenset({"SCHEDULED", "IN_PROGRESS", "SUSPENDED"})
JOB_STATES = ("SCHEDULED", "IN_PROGRESS", "SUSPENDED", "FAILED", "CANCELED", "EXPIRED", "COMPLETED")

MSG_NO_KEY = "Missing API key: send it in the API-KEY header"
MSG_BAD_KEY = "Invalid API key"
MSG_NO_APP = "App not found"
MSG_NO_BATCH = "Batch not found"
MSG_NO_JOB = "Job not found"
MSG_JOB_FAILED = "The data program could not process this input"
MSG_RESPONSE_GONE = "Job response not found: responses are deleted after the retention period"

# Shares of ``processing_delay`` after a batch's creation: ingestion ends, jobs start, jobs settle at 1.0.
INGESTED_AT = 0.25
STARTED_AT = 0.5


def csv_tuple(filename: str, message: str) -> str:
    """``"{filename}, {message}"``, quoted as CSV when a part holds a comma or a quote."""
    if any(c in filename + message for c in ',"\n'):
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow([filename, message])
        return out.getvalue()
    return f"{filename}, {message}"


def input_error(value: Any, topics: Iterable[str]) -> str | None:
    """Why an input is invalid for the occupation coder, or ``None``."""
    if not isinstance(value, dict):
        return "Input must be a JSON object"
    title, duties = value.get("job_title"), value.get("duties", "")
    if not isinstance(title, str) or not title.strip():
        return "job_title is required"
    if duties is None:
        duties = ""
    if not isinstance(duties, str):
        return "duties must be a string"
    if len(title) + len(duties) > MAX_TEXT:
        return f"Input text exceeds the maximum length allowed: {len(title) + len(duties)} > {MAX_TEXT} characters"
    topic = value.get("topic", DEFAULT_TOPIC)
    if not isinstance(topic, str) or topic not in topics:
        shown = topic[:40] if isinstance(topic, str) else type(topic).__name__
        return f"Unknown topic {shown!r}: expected one of {', '.join(sorted(topics))}"
    return None


def filename_of(value: Any, index: int) -> str:
    """The "filename" of an inline input in ``errors_with_filename``: its ``line`` when it has one, else its index."""
    if isinstance(value, dict):
        line = value.get("line")
        if isinstance(line, int) and not isinstance(line, bool):
            return str(line)
    return str(index)


def fails(batch_id: str, index: int, value: dict[str, Any], rate: float) -> bool:
    """Whether a valid input's job fails: a deterministic share ``rate`` of inputs, by a hash of the input."""
    if rate <= 0:
        return False
    text = f"{value.get('job_title')}\x00{value.get('duties')}\x00{value.get('line', index)}"
    draw = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2.0**64
    return draw < rate


@dataclass(slots=True)
class Job:
    """One job: an input of a batch, its fate and whether someone cancelled it."""

    id: str
    batch: Batch
    index: int
    input: dict[str, Any]
    failed: bool
    canceled_at: float | None = None

    def state(self, now: float, delay: float) -> str:
        """The job's state at ``now``."""
        if self.canceled_at is not None:
            return "CANCELED"
        elapsed = now - self.batch.created
        if elapsed < STARTED_AT * delay:
            return "SCHEDULED"
        if elapsed < delay:
            return "IN_PROGRESS"
        return "FAILED" if self.failed else "COMPLETED"

    def to_json(self, now: float, delay: float) -> dict[str, Any]:
        """The job object (without its response), under super.ai's camelCase field names."""
        state = self.state(now, delay)
        settled = state in ("COMPLETED", "FAILED")
        return {
            "uuid": self.id,
            "batchId": self.batch.id,
            "state": state,
            "createdDate": iso_time(self.batch.created),
            "completedDate": iso_time(self.batch.created + delay) if settled else None,
            "metadata": self.batch.metadata,
            "tags": list(self.batch.tags),
            "input": self.input,
            "errorMessage": MSG_JOB_FAILED if state == "FAILED" else None,
        }


@dataclass
class Batch:
    """One create call's batch: its inputs' fate once ingested."""

    id: str
    tenant: str
    app_uuid: str
    created: float
    total: int
    metadata: dict[str, Any] | None = None
    tags: list[str] = field(default_factory=list)
    ingested: bool = False
    jobs: list[Job] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    invalid_index: int | None = None
    error_message: str | None = None

    def processed(self, now: float, delay: float) -> bool:
        """Whether ingestion is over, as the service shows it."""
        return self.ingested and now - self.created >= INGESTED_AT * delay

    def to_json(self, now: float, delay: float) -> dict[str, Any]:
        """The documented job batch object."""
        done = self.processed(now, delay)
        return {
            "app_uuid": self.app_uuid,
            "batch_id": self.id,
            "batch_total": self.total,
            "created": iso_time(self.created),
            "invalid_index": self.invalid_index if done and self.invalid_index is not None else -1,
            "total_processed": len(self.jobs) if done else 0,
            "valid_count": len(self.jobs) if done else 0,
            "batch_processed": done,
            "error_message": self.error_message if done else None,
            "errors_with_filename": list(self.errors) if done else [],
        }


@dataclass(frozen=True)
class JobQuery:
    """The query of ``GET /v1/apps/{app_uuid}/jobs``: a page, states and created/completed windows (epoch s)."""

    page: int = 0
    size: int = 100
    states: frozenset[str] | None = None
    descending: bool = False
    created: tuple[float | None, float | None] = (None, None)
    completed: tuple[float | None, float | None] = (None, None)

    def admits(self, job: Job, state: str, delay: float) -> bool:
        """Whether the job passes the state and date filters."""
        if self.states is not None and state not in self.states:
            return False
        done = job.batch.created + delay if state in ("COMPLETED", "FAILED") else None
        for (low, high), when in ((self.created, job.batch.created), (self.completed, done)):
            if (low is not None or high is not None) and when is None:
                return False
            if when is not None and ((low is not None and when < low) or (high is not None and when > high)):
                return False
        return True


class SuperAiService(EmulatedService):
    """Everything the super.ai emulator remembers.

    :param config: the emulator's settings (``api_keys``, ``processing_delay``, ``retention``,
        ``record_failure_rate``, ``max_upload_bytes``, ``processing_workers``, fault flags, ``seed``).
    """

    name = "superai"
    counter_names = ("batches_created", "jobs_created", "invalid_inputs", "requests", "responses")

    def __init__(self, config: EmulatorConfig) -> None:
        super().__init__(config)
        self.models: dict[str, CodingModel] = {topic: models[-1] for topic, models in load_models().items()}
        self.batches: dict[str, Batch] = {}
        self.jobs: dict[str, Job] = {}

    @property
    def delay(self) -> float:
        return self.config.processing_delay

    @property
    def body_limit(self) -> int:
        """Largest create request body accepted."""
        return min(MAX_INPUTS_BYTES, self.config.max_upload_bytes)

    # -- auth ------------------------------------------------------------------------------------

    def tenant(self, api_key: str | None) -> str:
        """The tenant of an ``API-KEY`` header: 401 when missing, 403 when unknown."""
        if not api_key:
            raise ApiError(401, MSG_NO_KEY)
        for key, tenant in self.config.api_keys.items():
            if hmac.compare_digest(key.encode(), api_key.encode("utf-8", "surrogateescape")):
                return tenant
        raise ApiError(403, MSG_BAD_KEY)

    @staticmethod
    def app(app_uuid: str) -> str:
        """A well-formed app UUID (any is an app of the caller's tenant), canonical; else 404."""
        try:
            return str(uuid.UUID(app_uuid))
        except ValueError:
            raise ApiError(404, MSG_NO_APP) from None

    # -- batches ---------------------------------------------------------------------------------

    def create_batch(self, tenant: str, app_uuid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Accept a create call's body (already shape-checked) and ingest it in the background."""
        inputs = body.get("inputs")
        batch = Batch(
            id=str(uuid.uuid4()),
            tenant=tenant,
            app_uuid=app_uuid,
            created=self.clock.now(),
            total=len(inputs) if isinstance(inputs, list) else 1,
            metadata=body.get("metadata"),
            tags=list(body.get("tags") or []),
        )
        with self.lock:
            self.batches[batch.id] = batch
        self.counters["batches_created"][tenant] += 1
        answer = {"message": "Jobs received for processing", "batch_id": batch.id}
        if isinstance(inputs, list):
            single = len(inputs) == 1 and input_error(inputs[0], self.models) is None
            first = str(uuid.uuid4())
            if single:
                answer["uuid"] = first
            self._pool.submit(self._ingest, batch, inputs, first)
        else:
            self._fetch_failed(batch, str(body.get("inputsFileUrl")))
        return answer

    def _fetch_failed(self, batch: Batch, url: str) -> None:
        """An ``inputsFileUrl`` batch: the emulator reaches no outside storage, so fetching fails as documented."""
        message = f"Error occurred while fetching the document:{url}, maximum retries exceeded."
        with self.lock:
            batch.errors = [csv_tuple(url, message)]
            batch.invalid_index = 0
            batch.error_message = message
            batch.ingested = True
        self.counters["invalid_inputs"][batch.tenant] += 1

    def _ingest(self, batch: Batch, inputs: list[Any], first_id: str) -> None:
        """Validate every input (non-strict: valid ones become jobs, invalid ones are reported)."""
        jobs: list[Job] = []
        errors: list[str] = []
        first_invalid: int | None = None
        first_message: str | None = None
        rate = self.config.record_failure_rate
        for index, value in enumerate(inputs):
            problem = input_error(value, self.models)
            if problem is not None:
                errors.append(csv_tuple(filename_of(value, index), problem))
                if first_invalid is None:
                    first_invalid, first_message = index, problem
                continue
            job_id = first_id if index == 0 else str(uuid.uuid4())
            jobs.append(Job(job_id, batch, index, value, fails(batch.id, index, value, rate)))
        with self.lock:
            self.jobs.update((job.id, job) for job in jobs)
            batch.jobs = jobs
            batch.errors = errors
            batch.invalid_index = first_invalid
            batch.error_message = first_message
            batch.ingested = True
        self.counters["jobs_created"][batch.tenant] += len(jobs)
        self.counters["invalid_inputs"][batch.tenant] += len(errors)

    def batch(self, tenant: str, app_uuid: str, batch_id: str) -> Batch:
        """One of the tenant's batches in that app; 404 otherwise."""
        batch = self.batches.get(batch_id)
        if batch is None or batch.tenant != tenant or batch.app_uuid != app_uuid:
            raise ApiError(404, MSG_NO_BATCH)
        return batch

    def batch_json(self, batch: Batch) -> dict[str, Any]:
        return batch.to_json(self.clock.now(), self.delay)

    def list_batches(self, tenant: str, app_uuid: str) -> list[dict[str, Any]]:
        """The tenant's batches in that app, oldest first (``GET /v1/apps/{app_uuid}/batches``)."""
        now = self.clock.now()
        with self.lock:
            mine = [b for b in self.batches.values() if b.tenant == tenant and b.app_uuid == app_uuid]
        return [b.to_json(now, self.delay) for b in sorted(mine, key=lambda b: b.created)]

    def list_jobs(self, tenant: str, app_uuid: str, query: JobQuery) -> dict[str, Any]:
        """One page (0-based) of the app's visible jobs (``GET /v1/apps/{app_uuid}/jobs``), filtered and sorted."""
        now = self.clock.now()
        with self.lock:
            batches = [b for b in self.batches.values() if b.tenant == tenant and b.app_uuid == app_uuid]
        jobs = [job for b in batches if b.processed(now, self.delay) for job in b.jobs]
        jobs = [job for job in jobs if query.admits(job, job.state(now, self.delay), self.delay)]
        jobs.sort(key=lambda job: (job.batch.created, job.batch.id, job.index), reverse=query.descending)
        chosen = jobs[query.page * query.size : (query.page + 1) * query.size]
        return {
            "jobs": [job.to_json(now, self.delay) for job in chosen],
            "page": query.page,
            "size": query.size,
            "pages": math.ceil(len(jobs) / query.size),
            "total": len(jobs),
        }

    # -- jobs ------------------------------------------------------------------------------------

    def job(self, tenant: str, job_id: str) -> Job:
        """One of the tenant's jobs; 404 otherwise (also before its batch is shown as processed)."""
        job = self.jobs.get(job_id)
        if job is None or job.batch.tenant != tenant or not job.batch.processed(self.clock.now(), self.delay):
            raise ApiError(404, MSG_NO_JOB)
        return job

    def job_json(self, job: Job) -> dict[str, Any]:
        return job.to_json(self.clock.now(), self.delay)

    def response(self, job: Job) -> dict[str, Any]:
        """A completed job's response: 409 before completion or after failure, 404 after retention."""
        now = self.clock.now()
        state = job.state(now, self.delay)
        if state != "COMPLETED":
            raise ApiError(409, f"Job {job.id} is {state}: it has no response")
        if now > job.batch.created + self.delay + self.config.retention:
            raise ApiError(404, MSG_RESPONSE_GONE)
        self.counters["responses"][job.batch.tenant] += 1
        return {"job_id": job.id, "state": state, "response": self.code(job.input)}

    def code(self, value: dict[str, Any]) -> dict[str, Any]:
        """The occupation coder's output for one input."""
        model = self.models[value.get("topic", DEFAULT_TOPIC)]
        outcome = model.code(value["job_title"], value.get("duties") or "")
        if outcome.result is not None:
            found = outcome.result
            return {"code": found.category, "label": found.label, "confidence": found.confidence}
        suggestions = [{"code": s.category, "label": s.label, "confidence": s.confidence} for s in outcome.suggestions]
        return {"code": None, "suggestions": suggestions}

    def cancel(self, job: Job) -> dict[str, Any]:
        """Cancel a live job; 409 once it has settled."""
        now = self.clock.now()
        with self.lock:
            state = job.state(now, self.delay)
            if state not in LIVE_STATES:
                raise ApiError(
                    409, f"Job {job.id} is {state}: only SCHEDULED, IN_PROGRESS or SUSPENDED jobs can be canceled"
                )
            job.canceled_at = now
        return job.to_json(now, self.delay)

    # -- admin -----------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """Jobs by state."""
        now = self.clock.now()
        return {"jobs_by_state": dict(self.tally(self.jobs.values(), lambda job: job.state(now, self.delay)))}
