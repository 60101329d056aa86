"""The Gravity-AI emulator's state: tenants, jobs, output files.

Request handlers run on the event loop; a job's input is checked in the request (on a worker
thread, so ``billedUsage`` is known when the POST answers, as documented) and coded on a thread
pool, or in the request itself when ``processing_delay`` is 0 (the job is then already ``success``
when the POST returns). Statuses are computed on read from facts and the clock. The hosted model
is :mod:`airflow_batchcode.emulator.gravity_model`. Project versions are the ANZSCO model versions;
none given means the latest. Billing: one unit ($0.001) per record, records priced in groups of
:data:`GROUP_SIZE` (``recordGroupCount``).
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from airflow_batchcode.emulator.coding_model import CodingModel, load_models
from airflow_batchcode.emulator.common import EmulatedService
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import ApiError, iso_time
from airflow_batchcode.emulator.gravity_model import (
    FEATURES,
    OUTPUTS,
    JobFailed,
    JobRequest,
    Mapping,
    check_input,
    code_csv,
    is_csv,
)
from airflow_batchcode.emulator.signing import Signer

__all__ = ["FEATURES", "OUTPUTS", "GravityError", "GravityService", "Job", "JobFailed", "JobRequest", "parse_request"]

log = logging.getLogger(__name__)

GROUP_SIZE = 100

LATEST_LIMIT = 50

OUTPUT_BUCKET = "gravity-user-data"

MAX_NAME = 256

MSG_NO_KEY = "An API key is required: send it in the X-Api-Key header"

MSG_BAD_KEY = "Invalid API key"

MSG_INTERNAL = "An unexpected error occurred"

_JOB_KEY = re.compile(
    r"^([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})/output/data_[0-9a-f]{8}\.csv$"
)


class GravityError(ApiError):
    """An error answered in Gravity's envelope: ``{"data": null, "isError": true, "errorMessage": ...}``.

    :param status: the HTTP status; 200 for the errors the service reports inside a successful answer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)


def _mappings(value: Any, what: str) -> tuple[Mapping, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise GravityError(400, f"{what} must be a list of {{source, destination, defaultValue}} objects")
    entries = []
    for index, item in enumerate(value):
        source = item.get("source") if isinstance(item, dict) else None
        destination = item.get("destination") if isinstance(item, dict) else None
        if not isinstance(source, str) or not source or not isinstance(destination, str) or not destination:
            raise GravityError(400, f"{what}[{index}] needs a non-empty source and destination")
        default = item.get("defaultValue")
        if isinstance(default, dict | list):
            raise GravityError(400, f"{what}[{index}].defaultValue must be a plain value")
        entries.append(Mapping(source, destination, None if default is None else str(default)))
    return tuple(entries)


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise GravityError(400, f"{key} must be a string of at most {MAX_NAME} characters")
    return value


def parse_request(raw: bytes) -> JobRequest:
    """Read and check the ``data`` part (JSON); a 400 :class:`GravityError` says what is wrong."""
    try:
        data = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        raise GravityError(400, "The data part is not valid JSON") from None
    if not isinstance(data, dict):
        raise GravityError(400, "The data part must be a JSON object")
    mime = data.get("mimeType")
    if not isinstance(mime, str) or not mime.strip():
        raise GravityError(400, "mimeType is required")
    return JobRequest(
        mime_type=mime.strip(),
        name=_optional_text(data, "name"),
        version=_optional_text(data, "version"),
        mapping=_mappings(data.get("mapping"), "mapping"),
        output_mapping=_mappings(data.get("outputMapping"), "outputMapping"),
    )


@dataclass
class Job:
    """One on-demand job. Its status is computed from these facts and the clock."""

    id: str
    tenant: str
    name: str
    input_file_name: str
    input_mime: str
    request: JobRequest
    model: CodingModel
    created_at: float
    updated_at: float
    record_count: int = 0
    outcome: Literal["success", "error"] | None = None
    ready_at: float = 0.0
    error: str | None = None
    files_deleted: bool = False

    def status(self, now: float) -> str:
        """``incomplete`` until coded and ``processing_delay`` has passed, then ``success`` or ``error``."""
        if self.outcome is None or now < self.ready_at:
            return "incomplete"
        return self.outcome

    def to_json(self, now: float) -> dict[str, Any]:
        """The documented job object (plus ``statusMessage``, as the official client reads it)."""
        status = self.status(now)
        messages = {
            "incomplete": f"Processing {self.record_count} records",
            "success": "Job completed",
            "error": self.error or MSG_INTERNAL,
        }
        done = status != "incomplete"
        return {
            "name": self.name,
            "inputFileName": self.input_file_name,
            "inputMime": self.input_mime,
            "billedUsage": self.record_count,
            "recordCount": self.record_count,
            "recordGroupCount": -(-self.record_count // GROUP_SIZE),
            "processingTimeMS": round((self.ready_at - self.created_at) * 1000) if done else 0,
            "status": status,
            "statusMessage": messages[status],
            "errorMessage": self.error if status == "error" else None,
            "id": self.id,
            "createdDateUtc": iso_time(self.created_at),
            "lastUpdatedUtc": iso_time(max(self.updated_at, self.ready_at) if done else self.updated_at),
        }


class GravityService(EmulatedService):
    """Everything the Gravity emulator remembers.

    :param config: the emulator's settings (``api_keys``, ``processing_delay``, ``url_ttl``, ``retention``,
        ``record_failure_rate``, ``max_upload_bytes``, ``data_dir``, ``public_url``, ``seed``, faults).
    """

    name = "gravity"
    counter_names = ("jobs_created", "requests", "uploads", "result_links", "downloads")

    def __init__(self, config: EmulatorConfig) -> None:
        super().__init__(config)
        self.signer = Signer()
        self.models = {m.info.model_version: m for m in load_models()["anzsco"]}
        self.latest_model = load_models()["anzsco"][-1]
        self.data_dir = self._data_dir()
        self.jobs_dir = self.data_dir / "jobs"
        self.uploads_dir = self.data_dir / "uploads"
        for folder in (self.jobs_dir, self.uploads_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}

    # -- auth and lookup -------------------------------------------------------------------------

    def tenant(self, api_key: str | None) -> str:
        """The tenant of an ``X-Api-Key`` value, or a 401."""
        if not api_key:
            raise GravityError(401, MSG_NO_KEY)
        tenant = self.config.api_keys.get(api_key)
        if tenant is None:
            raise GravityError(401, MSG_BAD_KEY)
        return tenant

    def job(self, tenant: str, job_id: str) -> Job:
        """One of ``tenant``'s jobs; anyone else's, or none, is a 404."""
        job = self.jobs.get(job_id)
        if job is None or job.tenant != tenant:
            raise GravityError(404, f"Job {job_id[:64]} was not found")
        return job

    def describe(self, job: Job) -> dict[str, Any]:
        """The job object now."""
        return job.to_json(self.clock.now())

    # -- jobs ------------------------------------------------------------------------------------

    def model_for(self, version: str | None) -> CodingModel:
        """The project version's model; an unknown version is reported inside a 200 (as an envelope error)."""
        if version is None:
            return self.latest_model
        model = self.models.get(version)
        if model is None:
            known = ", ".join(self.models)
            raise GravityError(200, f"Project version {version[:64]!r} was not found (versions: {known})")
        return model

    def create_job(self, tenant: str, request: JobRequest, upload: Path, filename: str) -> Job:
        """Make a job of an uploaded file (moved into the job's folder). Blocking: call on a worker thread."""
        model = self.model_for(request.version)
        now = self.clock.now()
        job_id = str(uuid.uuid4())
        folder = self.jobs_dir / job_id
        folder.mkdir()
        source = folder / "input.csv"
        upload.replace(source)
        job = Job(
            id=job_id,
            tenant=tenant,
            name=request.name or filename,
            input_file_name=filename,
            input_mime=request.mime_type,
            request=request,
            model=model,
            created_at=now,
            updated_at=now,
        )
        try:
            if not is_csv(request.mime_type):
                raise JobFailed(
                    f"Unsupported mimeType {request.mime_type[:80]!r}: this model takes text/csv; header=present"
                )
            job.record_count = check_input(source, request)
        except JobFailed as exc:
            self._finish(job, str(exc), now)
        with self.lock:
            self.jobs[job_id] = job
            self.counters["jobs_created"][tenant] += 1
        if job.outcome is None:
            if self.config.processing_delay <= 0:
                self._process(job)
            else:
                self._pool.submit(self._process, job)
        return job

    def _process(self, job: Job) -> None:
        folder = self.jobs_dir / job.id
        source = folder / "input.csv"
        error: str | None = None
        try:
            if self._cancelled.is_set():
                raise JobFailed("The service is shutting down")
            part = folder / "output.csv.part"
            code_csv(
                source,
                part,
                job.request,
                job.model,
                seed=self.config.seed,
                failure_rate=self.config.record_failure_rate,
                cancelled=self._cancelled,
            )
            part.replace(folder / "output.csv")
        except JobFailed as exc:
            error = str(exc)
        except Exception:
            log.exception("Gravity emulator job %s failed", job.id)
            error = MSG_INTERNAL
        finally:
            source.unlink(missing_ok=True)
        finished = self.clock.now()
        self._finish(job, error, max(finished, job.created_at + self.config.processing_delay))

    def _finish(self, job: Job, error: str | None, ready_at: float) -> None:
        with self.lock:
            job.error = error
            job.ready_at = ready_at
            job.outcome = "success" if error is None else "error"
        if error is not None:
            shutil.rmtree(self.jobs_dir / job.id, ignore_errors=True)

    def rename(self, job: Job, name: str) -> None:
        """Rename a job; ``billedUsage`` and the rest stay as they are."""
        with self.lock:
            job.name = name
            job.updated_at = self.clock.now()

    def latest(self, tenant: str) -> list[Job]:
        """``tenant``'s most recent jobs, newest first."""
        with self.lock:
            mine = [job for job in self.jobs.values() if job.tenant == tenant]
        mine.sort(key=lambda job: job.created_at, reverse=True)
        return mine[:LATEST_LIMIT]

    # -- output ----------------------------------------------------------------------------------

    def expire_output(self, job: Job, now: float) -> bool:
        """Delete a finished job's output once ``retention`` has passed; True when it is gone."""
        if not job.files_deleted and job.outcome == "success" and now > job.ready_at + self.config.retention:
            with self.lock:
                job.files_deleted = True
            shutil.rmtree(self.jobs_dir / job.id, ignore_errors=True)
        return job.files_deleted

    def output_key(self, job: Job) -> str:
        return f"{job.id}/output/data_{job.id[:8]}.csv"

    def result_link(self, job: Job, base: str) -> str:
        """A presigned GET URL of the job's output, or the envelope error (inside a 200) saying why not."""
        now = self.clock.now()
        status = job.status(now)
        if status == "incomplete":
            raise GravityError(200, f"Job {job.id} is not complete yet (status incomplete): its output is not ready")
        if status == "error":
            raise GravityError(200, f"Job {job.id} failed, so it has no output file")
        if self.expire_output(job, now):
            raise GravityError(
                200,
                f"The output file of job {job.id} is no longer available "
                f"(outputs are kept for {self.config.retention:g} seconds)",
            )
        path = f"/_storage/{OUTPUT_BUCKET}/{self.output_key(job)}"
        signed = self.signer.presign("GET", path, ttl=self.config.url_ttl, now=now, style="v2")
        self.counters["result_links"][job.tenant] += 1
        return (self.config.public_url or base).rstrip("/") + signed

    def output_file(self, bucket: str, key: str) -> tuple[Job, Path] | None:
        """The job and file behind a storage key, when the output exists and is still kept."""
        match = _JOB_KEY.match(key)
        if bucket != OUTPUT_BUCKET or match is None:
            return None
        job = self.jobs.get(match.group(1))
        if job is None or key != self.output_key(job) or job.status(self.clock.now()) != "success":
            return None
        if self.expire_output(job, self.clock.now()):
            return None
        return job, self.jobs_dir / job.id / "output.csv"

    # -- admin -----------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """Jobs by status."""
        now = self.clock.now()
        return {"jobs_by_status": dict(self.tally(self.jobs.values(), lambda job: job.status(now)))}
