"""The Gravity-AI emulator's state: tenants, jobs, the hosted "occupation coder" model, output files.

Request handlers run on the event loop; a job's input is checked in the request (on a worker
thread, so ``billedUsage`` is known when the POST answers, as documented) and coded on a thread
pool, or in the request itself when ``processing_delay`` is 0 (the job is then already ``success``
when the POST returns). Statuses are computed on read from facts and the clock.

The hosted model. Its features are ``job_title`` and ``duties`` (the input ``mapping`` renames the
caller's columns to them; columns not mapped pass through unchanged, a mapped source missing from
the file takes its ``defaultValue`` or fails the job). Its outputs are ``code``, ``label``,
``confidence`` and ``error`` (``outputMapping`` renames them; an empty value takes the entry's
``defaultValue``). The output CSV has every (mapped) input column, then the outputs, one row per
input row in input order. A row with an empty title and duties, or one chosen by
``record_failure_rate`` (a hash of the texts, so the same record always fails), gets an ``error`` and
no code. Otherwise the ANZSCO coder answers: a code with its label and confidence, or, when it is
not sure, no code (an unsuccessful record). Project versions are the ANZSCO model versions; none
given means the latest. Billing: one unit ($0.001) per record, records priced in groups of
:data:`GROUP_SIZE` (``recordGroupCount``).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import shutil
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import msgspec

from airflow_batchcode.emulator.abs_service import Clock
from airflow_batchcode.emulator.coding_model import CodingModel, load_models
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import iso_time
from airflow_batchcode.emulator.faults import FaultInjector, settings_from
from airflow_batchcode.emulator.signing import Signer

log = logging.getLogger(__name__)

FEATURES = ("job_title", "duties")
OUTPUTS = ("code", "label", "confidence", "error")
GROUP_SIZE = 100
LATEST_LIMIT = 50
OUTPUT_BUCKET = "gravity-user-data"
MAX_NAME = 256
CSV_MIMES = frozenset({"text/csv", "application/csv"})

MSG_NO_KEY = "An API key is required: send it in the X-Api-Key header"
MSG_BAD_KEY = "Invalid API key"
MSG_INTERNAL = "An unexpected error occurred"
MSG_ROW_EMPTY = "job_title and duties are both empty"
MSG_ROW_FAILED = "The model could not score this record"

_JOB_KEY = re.compile(
    r"^([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})/output/data_[0-9a-f]{8}\.csv$"
)


class GravityError(Exception):
    """An error answered in Gravity's envelope: ``{"data": null, "isError": true, "errorMessage": ...}``.

    :param status: the HTTP status; 200 for the errors the service reports inside a successful answer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class JobFailed(Exception):
    """The job's input cannot be processed: the job ends ``error`` with this message."""


@dataclass(frozen=True)
class Mapping:
    """One ``mapping`` / ``outputMapping`` entry."""

    source: str
    destination: str
    default: str | None = None


@dataclass(frozen=True)
class JobRequest:
    """The ``data`` part of a job submission, checked."""

    mime_type: str
    name: str | None = None
    version: str | None = None
    mapping: tuple[Mapping, ...] = ()
    output_mapping: tuple[Mapping, ...] = ()


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


def is_csv(mime: str) -> bool:
    """``text/csv`` with any parameters."""
    return mime.split(";", 1)[0].strip().lower() in CSV_MIMES


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


# --- the hosted model over CSV -------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How input rows become output rows: which input column feeds each (mapped) column, and defaults."""

    columns: tuple[str, ...]
    sources: tuple[int, ...]  # index into the input row, -1 for a mapped column absent from the input
    defaults: tuple[str | None, ...]
    title: int
    duties: int
    outputs: tuple[str, ...]
    output_defaults: tuple[str | None, ...]


def plan(header: Sequence[str], request: JobRequest) -> _Plan:
    """Apply the mappings to the input header; :class:`JobFailed` when the model cannot read the result."""
    renamed = {m.source: m for m in request.mapping}
    columns: list[str] = []
    sources: list[int] = []
    defaults: list[str | None] = []
    for index, name in enumerate(header):
        entry = renamed.get(name)
        columns.append(entry.destination if entry else name)
        sources.append(index)
        defaults.append(entry.default if entry else None)
    for entry in request.mapping:
        if entry.source not in header:
            if entry.default is None:
                raise JobFailed(f"Mapping source column {entry.source!r} is not in the input file")
            columns.append(entry.destination)
            sources.append(-1)
            defaults.append(entry.default)
    missing = [f for f in FEATURES if f not in columns]
    if missing:
        raise JobFailed(
            f"The model's features {', '.join(FEATURES)} are missing from the input (missing: {', '.join(missing)}; "
            "map your columns to them with mapping)"
        )
    outputs = {m.source: m for m in request.output_mapping}
    unknown = [name for name in outputs if name not in OUTPUTS]
    if unknown:
        raise JobFailed(f"outputMapping source {unknown[0]!r} is not an output of the model ({', '.join(OUTPUTS)})")
    return _Plan(
        columns=tuple(columns),
        sources=tuple(sources),
        defaults=tuple(defaults),
        title=columns.index(FEATURES[0]),
        duties=columns.index(FEATURES[1]),
        outputs=tuple(outputs[o].destination if o in outputs else o for o in OUTPUTS),
        output_defaults=tuple(outputs[o].default if o in outputs else None for o in OUTPUTS),
    )


def _rows(handle: IO[str]) -> Iterator[list[str]]:
    """Non-blank CSV rows; a bad file is a :class:`JobFailed`."""
    try:
        for row in csv.reader(handle):
            if row and any(value != "" for value in row):
                yield row
    except UnicodeDecodeError:
        raise JobFailed("The input file is not UTF-8 text") from None
    except csv.Error as exc:
        raise JobFailed(f"The input file is not valid CSV: {exc}") from None


def check_input(path: Path, request: JobRequest) -> int:
    """Check a CSV input against the model and count its records (what is billed)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = _rows(handle)
        header = next(rows, None)
        if header is None:
            raise JobFailed("The input file is empty")
        plan(header, request)
        count = sum(1 for _ in rows)
    if count == 0:
        raise JobFailed("The input file has a header but no records")
    return count


def fails_by_rate(seed: int, title: str, duties: str, rate: float) -> bool:
    """Whether ``record_failure_rate`` picks this record: a stable hash of the texts below ``rate``."""
    if rate <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}\0{title}\0{duties}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


def code_csv(
    source: Path,
    target: Path,
    request: JobRequest,
    model: CodingModel,
    *,
    seed: int,
    failure_rate: float,
    cancelled: threading.Event | None = None,
) -> int:
    """Run the model over a CSV input, streaming; return the rows written (:class:`JobFailed` if ``cancelled``)."""
    written = 0
    with source.open(encoding="utf-8-sig", newline="") as src, target.open("w", encoding="utf-8", newline="") as out:
        rows = _rows(src)
        how = plan(next(rows), request)
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(how.columns + how.outputs)
        for row in rows:
            values = [
                (row[i] if 0 <= i < len(row) else "") or (default or "")
                for i, default in zip(how.sources, how.defaults, strict=True)
            ]
            outputs = _score(values[how.title], values[how.duties], model, seed, failure_rate)
            outputs = [value or (default or "") for value, default in zip(outputs, how.output_defaults, strict=True)]
            writer.writerow(values + outputs)
            written += 1
            if cancelled is not None and written % 4096 == 0 and cancelled.is_set():
                raise JobFailed("The service is shutting down")
    return written


def _score(title: str, duties: str, model: CodingModel, seed: int, failure_rate: float) -> list[str]:
    """``[code, label, confidence, error]`` of one record."""
    if not title.strip() and not duties.strip():
        return ["", "", "", MSG_ROW_EMPTY]
    if fails_by_rate(seed, title, duties, failure_rate):
        return ["", "", "", MSG_ROW_FAILED]
    outcome = model.code(title, duties)
    if outcome.status == "successful" and outcome.result is not None:
        result = outcome.result
        return [result.category, result.label, f"{result.confidence:g}", ""]
    return ["", "", "", ""]


# --- the service ---------------------------------------------------------------------------------


class GravityService:
    """Everything the Gravity emulator remembers.

    :param config: the emulator's settings (``api_keys``, ``processing_delay``, ``url_ttl``, ``retention``,
        ``record_failure_rate``, ``max_upload_bytes``, ``data_dir``, ``public_url``, ``seed``, faults).
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.signer = Signer()
        self.faults = FaultInjector(settings_from(config), seed=config.seed)
        self.models = {m.info.model_version: m for m in load_models()["anzsco"]}
        self.latest_model = load_models()["anzsco"][-1]
        self.owns_data_dir = config.data_dir is None
        self.data_dir = Path(config.data_dir or tempfile.mkdtemp(prefix="gravity-emulator-"))
        self.jobs_dir = self.data_dir / "jobs"
        self.uploads_dir = self.data_dir / "uploads"
        for folder in (self.jobs_dir, self.uploads_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self._cancelled = threading.Event()
        self._pool = ThreadPoolExecutor(config.processing_workers, thread_name_prefix="gravity-emulator")
        self.counters: dict[str, Counter[str]] = {
            name: Counter() for name in ("jobs_created", "requests", "uploads", "result_links", "downloads")
        }

    def close(self) -> None:
        """Stop the workers and delete the data directory if the service created it."""
        self._cancelled.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

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

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /_emulator/stats``."""
        now = self.clock.now()
        with self.lock:
            jobs = list(self.jobs.values())
        c = self.counters
        return {
            "jobs_created": dict(c["jobs_created"]),
            "jobs_by_status": dict(Counter(job.status(now) for job in jobs)),
            "requests": dict(c["requests"]),
            "faults": dict(self.faults.injected),
            "uploads": dict(c["uploads"]),
            "result_links": dict(c["result_links"]),
            "downloads": dict(c["downloads"]),
            "clock_offset": self.clock.offset,
        }
