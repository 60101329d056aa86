"""ASG Refinery batch jobs: a canonical manifest staged in object storage, a consensus label per record.

Wire contract: ``shared/SERVICES.md`` §2 and the Refinery "Batch jobs" page. ``Authorization:
Bearer <api_key>``; errors are ``{"error": "..."}`` (401 bad key, 403 quota exhausted, 404 for
another customer's job). ``POST /v1/jobs`` takes the manifest URL, the label question and options,
the consensus threshold and the storage credentials, and answers 202 with a ``job_id``; ``GET
/v1/jobs/{id}`` reports ``accepted → processing → completed | failed`` with task counts; ``GET
/v1/jobs/{id}/export`` streams the settled task results as JSONL (409 until the job completes).

Decisions where the documentation is silent (the emulator follows them):

* Each canonical record becomes one manifest line whose ``data_url`` is a ``data:`` URL holding
  the record's ``{"occp_text", "tasks_text"}`` JSON, percent-encoded; ``metadata`` carries the
  0-based manifest ``line`` and the ``record_id`` so results join back (exports come in any order).
* The labels are the classification's major groups, each option starting with its code
  (``"2 Professionals"``), so a consensus label maps back to a 1-digit code.
* With ``delivery`` the results are read from ``s3://<bucket>/<delivery_key>`` (by default
  ``refinery/<job_id>/results.jsonl``) through the connection's object store. A job object that
  carries ``delivery`` decides; otherwise the connection's ``delivery_bucket`` does.
* A failed job's reason is read from ``error`` (or ``message``) in the job object.
* No request rate limit is documented: the limiter is off unless ``rate_limit`` is set.

Connection extras read here: ``label_question`` (``{topic}`` is replaced by the classification's
name), ``label_options`` (a list, or a JSON list as text), ``consensus_threshold`` (2-10, default 3),
``task_type`` (default ``text_classification``), ``callback_url``, ``delivery_bucket``,
``delivery_key``, ``export_wait_attempts`` and ``export_wait_base`` (how long a download waits
for an export that answers 409), plus the shared HTTP settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

import requests

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    IncompleteDownloadError,
    InvalidRequestError,
    NotFoundError,
    OperationFailedError,
    QuotaExceededError,
    ServiceError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.base import (
    ManifestSource,
    ObjectStore,
    Operation,
    OperationState,
    SecretCallback,
    StagedInput,
    UploadTarget,
)
from airflow_batchcode.services.ratelimit import shared_limiter
from airflow_batchcode.services.registry import ServiceConfig, ServiceFactory
from airflow_batchcode.services.transport import (
    CHUNK_BYTES,
    AsyncTransport,
    ErrorReader,
    HttpSettings,
    SyncTransport,
    check_url,
    declared_length,
    describe_exception,
    json_message_reader,
)

SERVICE = "refinery"
DEFAULT_TASK_TYPE = "text_classification"
DEFAULT_THRESHOLD = 3
DEFAULT_DELIVERY_KEY = "refinery/{job_id}/results.jsonl"
DEFAULT_QUESTION = "Which major group of {topic} does this job belong to?"
MAJOR_GROUPS = (
    "1 Managers",
    "2 Professionals",
    "3 Technicians and Trades Workers",
    "4 Community and Personal Service Workers",
    "5 Clerical and Administrative Workers",
    "6 Sales Workers",
    "7 Machinery Operators and Drivers",
    "8 Labourers",
)
"""The default label options: the major groups, identical in ANZSCO 2022 and OSCA 2024."""
TOPIC_NAMES = {"anzsco": "ANZSCO", "osca": "OSCA"}
POLL_SCHEDULE = (5.0, 10.0, 20.0)
POLL_CAP = 60.0
"""The service's advice for status polls: 5, 10, 20 s, then doubling, at most 60 s apart."""
DATA_URL_PREFIX = "data:application/json;charset=utf-8,"
_STATES = {
    "accepted": OperationState.IN_PROGRESS,
    "processing": OperationState.IN_PROGRESS,
    "completed": OperationState.COMPLETE,
    "failed": OperationState.FAILED,
}
_JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PROGRESS_KEYS = ("progress_percent", "tasks_done", "tasks_failed", "total_tasks")
_CREDENTIAL_KEYS = frozenset({"credentials"})

read_refinery_error = json_message_reader("error", "message")
log = logging.getLogger("airflow_batchcode.services")


def poll_delay(attempt: int, base: float = POLL_SCHEDULE[0]) -> float:
    """Seconds to wait before poll number ``attempt`` (0-based): ``base``, doubling, capped at 60 s."""
    return min(POLL_CAP, base * 2 ** max(0, attempt))


# --- settings -----------------------------------------------------------------------------------


def _options(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigurationError("Connection extra 'label_options' must be a list or a JSON list") from None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigurationError("Connection extra 'label_options' must be a list of non-empty strings")
    options = tuple(v.strip() for v in value)
    if len(options) < 2 or len(set(options)) != len(options):
        raise ConfigurationError("Connection extra 'label_options' needs at least two distinct options")
    return options


@dataclass(frozen=True)
class RefinerySettings:
    """What a Refinery client needs to know.

    :param base_url: API origin, e.g. ``https://api.asgrefinery.io`` (no ``/v1``).
    :param api_key: the Bearer API key (hidden from ``repr``).
    :param label_question: the question put to workers; ``{topic}`` names the classification.
    :param label_options: the answers workers choose from (default: the major groups).
    :param consensus_threshold: workers who must agree for a consensus (2-10).
    :param task_type: Refinery's task type.
    :param callback_url: job-level webhook, if any.
    :param delivery_bucket: deliver results to this S3 bucket instead of the export endpoint.
    :param delivery_key: object key of delivered results; ``{job_id}`` is replaced.
    :param export_wait_attempts: retries of an export answering 409 before giving up.
    :param export_wait_base: first wait between those retries (then doubling, capped at 60 s).
    :param rate_limit: API requests per second (0 = no limit: none is documented).
    :param http: timeouts, retries and URL rules.
    """

    base_url: str
    api_key: str = field(repr=False)
    label_question: str = DEFAULT_QUESTION
    label_options: tuple[str, ...] = MAJOR_GROUPS
    consensus_threshold: int = DEFAULT_THRESHOLD
    task_type: str = DEFAULT_TASK_TYPE
    callback_url: str | None = None
    delivery_bucket: str | None = None
    delivery_key: str = DEFAULT_DELIVERY_KEY
    export_wait_attempts: int = 4
    export_wait_base: float = POLL_SCHEDULE[0]
    rate_limit: float = 0.0
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        if not self.base_url or urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"Refinery base URL must be an http(s) origin, got {self.base_url!r}")
        if not self.api_key:
            raise ConfigurationError("Refinery needs an API key: set it as the connection's password")
        check_url(self.api_root, allow_insecure_http=self.http.allow_insecure_http, what="API URL")
        if not 2 <= self.consensus_threshold <= 10:
            raise ConfigurationError(f"consensus_threshold must be 2 to 10, got {self.consensus_threshold}")
        if not self.label_question.strip():
            raise ConfigurationError("label_question must not be empty")
        _options(list(self.label_options))
        if not self.task_type.strip():
            raise ConfigurationError("task_type must not be empty")
        if self.callback_url and urlsplit(self.callback_url).scheme not in ("http", "https"):
            raise ConfigurationError("callback_url must be an http(s) URL")
        if self.delivery_bucket and not _BUCKET.match(self.delivery_bucket):
            raise ConfigurationError(f"delivery_bucket {self.delivery_bucket!r} is not a valid S3 bucket name")
        if "{job_id}" not in self.delivery_key:
            raise ConfigurationError("delivery_key must contain {job_id}")
        if self.export_wait_attempts < 0 or self.export_wait_base < 0:
            raise ConfigurationError("export_wait_attempts and export_wait_base must not be negative")

    @classmethod
    def from_config(cls, config: ServiceConfig) -> RefinerySettings:
        """Settings from a connection's fields and extras."""
        threshold = config.number("consensus_threshold", DEFAULT_THRESHOLD)
        if threshold != int(threshold):
            raise ConfigurationError(f"Connection extra 'consensus_threshold' must be a whole number, got {threshold}")
        options = config.extra.get("label_options")
        return cls(
            base_url=config.base_url,
            api_key=config.password,
            label_question=config.text("label_question", DEFAULT_QUESTION) or DEFAULT_QUESTION,
            label_options=MAJOR_GROUPS if options in (None, "", []) else _options(options),
            consensus_threshold=int(threshold),
            task_type=config.text("task_type", DEFAULT_TASK_TYPE) or DEFAULT_TASK_TYPE,
            callback_url=config.text("callback_url"),
            delivery_bucket=config.text("delivery_bucket"),
            delivery_key=config.text("delivery_key", DEFAULT_DELIVERY_KEY) or DEFAULT_DELIVERY_KEY,
            export_wait_attempts=int(config.number("export_wait_attempts", 4)),
            export_wait_base=config.number("export_wait_base", POLL_SCHEDULE[0]),
            rate_limit=config.number("rate_limit", 0.0),
            http=config.http_settings(),
        )

    @property
    def api_root(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def limiter_key(self) -> str:
        digest = hashlib.sha256(self.api_key.encode()).hexdigest()[:16]
        return f"{SERVICE}:{self.api_root}:{digest}"

    def label_spec(self, topic: str) -> dict[str, Any]:
        """The ``label_spec`` of a job coding against ``topic``."""
        name = TOPIC_NAMES.get(topic.lower(), topic.upper())
        return {"question": self.label_question.replace("{topic}", name), "options": list(self.label_options)}


# --- the wire format ----------------------------------------------------------------------------


def data_url(occp_text: str, tasks_text: str) -> str:
    """A record's texts as a ``data:`` URL of percent-encoded JSON."""
    payload = json.dumps({"occp_text": occp_text, "tasks_text": tasks_text}, separators=(",", ":"))
    return DATA_URL_PREFIX + quote(payload, safe="")


def _canonical(raw: bytes, line: int) -> tuple[str, str, str | None]:
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise ConfigurationError(f"Manifest line {line} is not a JSON object: expected a canonical record")
    occp, tasks, rid = record.get("occp_text"), record.get("tasks_text"), record.get("recordId")
    if not isinstance(occp, str) or not isinstance(tasks, str) or not (rid is None or isinstance(rid, str)):
        raise ConfigurationError(
            f"Manifest line {line} is not a canonical record (string occp_text and tasks_text, optional recordId)"
        )
    return occp, tasks, rid


def convert_manifest(source: ManifestSource, sink: IO[bytes]) -> int:
    """Stream a canonical manifest into Refinery's manifest JSONL; return the number of lines.

    Each line becomes ``{"data_url": <data: URL>, "metadata": {"line": <0-based>, "record_id": ...}}``.
    """
    with contextlib.ExitStack() as stack:
        handle: IO[bytes] = stack.enter_context(source.open("rb")) if isinstance(source, Path) else source
        count = 0
        for raw in handle:
            occp, tasks, rid = _canonical(raw, count)
            entry = {"data_url": data_url(occp, tasks), "metadata": {"line": count, "record_id": rid}}
            sink.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
            count += 1
    if count == 0:
        raise ConfigurationError("The manifest is empty: Refinery needs at least one record")
    return count


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "a list" if isinstance(value, list) else "an object"


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UnexpectedResponseError(f"{what}: response is {_kind(body)}, not a JSON object")
    return body


def parse_created(body: Any) -> UploadTarget:
    """Read the 202 answer of ``POST /v1/jobs``."""
    what = "Refinery create job"
    values = _object(body, what)
    job_id = values.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise UnexpectedResponseError(f"{what}: job_id is {'missing' if job_id is None else _kind(job_id)}")
    if not _JOB_ID.match(job_id):
        raise UnexpectedResponseError(f"{what}: job_id {job_id[:80]!r} is not a plain identifier")
    return UploadTarget(operation_id=job_id, upload_url="")


def parse_job(body: Any, job_id: str) -> Operation:
    """Read a job object (``GET /v1/jobs/{id}``) into an :class:`Operation`."""
    what = f"Refinery job {job_id}"
    job = _object(body, f"{what}: status")
    if "job_id" in job and job["job_id"] != job_id:
        raise UnexpectedResponseError(f"{what}: the service answered about another job")
    raw = job.get("status")
    if not isinstance(raw, str):
        raise UnexpectedResponseError(f"{what}: status is {'missing' if raw is None else _kind(raw)}")
    state = _STATES.get(raw)
    if state is None:
        raise UnexpectedResponseError(
            f"{what}: unknown status {raw[:80]!r} (expected accepted, processing, completed or failed)"
        )
    progress = {
        key: job[key]
        for key in _PROGRESS_KEYS
        if isinstance(job.get(key), int | float) and not isinstance(job.get(key), bool)
    }
    error = None
    if state is OperationState.FAILED:
        reason = job.get("error") or job.get("message")
        error = str(reason)[:500] if reason else "the service gave no reason"
    return Operation(operation_id=job_id, state=state, error=error, raw_status=raw, progress=progress)


def job_path(job_id: str) -> str:
    """``/v1/jobs/{id}``, with the id checked so it cannot reshape the URL."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise ConfigurationError(f"Invalid Refinery job id {job_id!r}: expected letters, digits, '.', '_' or '-'")
    return f"/v1/jobs/{quote(job_id, safe='')}"


def _translated(exc: ServiceError, what: str) -> ServiceError:
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


@contextlib.contextmanager
def _service_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (AuthenticationError, NotFoundError) as exc:
        raise _translated(exc, what) from None


class _RefineryBase:
    """What the sync and async clients share: settings, limiter, secret reporting and scrubbing."""

    service = SERVICE

    def __init__(self, settings: RefinerySettings, *, on_secret: SecretCallback | None = None) -> None:
        self.settings = settings
        self._on_secret = on_secret
        self._secrets: set[str] = set()
        self._limiter = shared_limiter(settings.limiter_key, settings.rate_limit)
        self._report_secret(settings.api_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings.api_root!r})"

    def _report_secret(self, value: str | None) -> None:
        if not value:
            return
        self._secrets.add(value)
        if self._on_secret is not None:
            self._on_secret(value)

    def _read_error(self) -> ErrorReader:
        """The error reader, with every secret this client knows taken out of the service's words."""

        def read(status: int, body: bytes, content_type: str) -> str | None:
            message = read_refinery_error(status, body, content_type)
            for secret in self._secrets:
                if message and len(secret) >= 4:
                    message = message.replace(secret, "<redacted>")
            return message

        return read

    def _headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key}", "Accept": "application/json"}

    def _url(self, path: str) -> str:
        return self.settings.api_root + path


class RefineryClient(_RefineryBase):
    """Synchronous Refinery client: create jobs from canonical manifests, poll them, fetch results.

    :param settings: where and who to connect as, and how jobs are labelled.
    :param object_store: where manifests are staged and delivered results are read.
    :param on_secret: called with every secret learnt (API key, storage credentials).
    """

    input_with_create = True
    output_name = "output.jsonl"

    def __init__(
        self,
        settings: RefinerySettings,
        *,
        object_store: ObjectStore | None = None,
        on_secret: SecretCallback | None = None,
    ) -> None:
        super().__init__(settings, on_secret=on_secret)
        self.object_store = object_store
        self._http = SyncTransport(settings.http, self._read_error(), self._limiter, service="Refinery")

    def __enter__(self) -> RefineryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    def _api(self, method: str, path: str, *, what: str, job_id: str | None = None, **kwargs: Any) -> Any:
        with _service_errors(what):
            return self._http.api_json(
                method, self._url(path), headers=self._headers, what=what, operation_id=job_id, **kwargs
            )

    def _store(self, why: str) -> ObjectStore:
        if self.object_store is None:
            raise ConfigurationError(
                f"Refinery {why} through object storage: set 'manifest_location' (s3://bucket/prefix) "
                "and 'storage_conn_id' (an Airflow aws connection) in the connection's extra"
            )
        return self.object_store

    # --- jobs ---------------------------------------------------------------------------------

    def job_request(self, topic: str, staged: StagedInput) -> dict[str, Any]:
        """The body of ``POST /v1/jobs`` for a staged manifest (holds the storage credentials)."""
        body: dict[str, Any] = {
            "manifest_url": staged.url,
            "label_spec": self.settings.label_spec(topic),
            "consensus_threshold": self.settings.consensus_threshold,
            "task_type": self.settings.task_type,
            "credentials": dict(staged.credentials),
        }
        if self.settings.callback_url:
            body["callback_url"] = self.settings.callback_url
        if self.settings.delivery_bucket:
            body["delivery"] = {"type": "s3", "bucket": self.settings.delivery_bucket}
        return body

    def create_operation(
        self, topic: str, model: str | None = None, *, manifest: ManifestSource | None = None, name: str | None = None
    ) -> UploadTarget:
        """Convert and stage ``manifest``, then create a job reading it; ``model`` is not used.

        :param name: the staged object's name (without ``.jsonl``); a random one when ``None``.
        """
        if manifest is None:
            raise ConfigurationError("Refinery takes its manifest with the create call: pass manifest=")
        store = self._store("reads its manifest")
        stem = name or uuid.uuid4().hex
        if not _OBJECT_NAME.match(stem):
            raise ConfigurationError(f"Invalid manifest name {stem!r}: expected letters, digits, '.', '_' or '-'")
        with tempfile.TemporaryFile(prefix="refinery-manifest-") as converted:
            convert_manifest(manifest, converted)
            converted.flush()
            converted.seek(0)
            staged = store.stage(converted, f"{stem}.jsonl")
        for key, value in staged.credentials.items():
            if key != "region" and isinstance(value, str):
                self._report_secret(value)
        body = self._api("POST", "/v1/jobs", what=f"create {topic} job", json=self.job_request(topic, staged))
        return parse_created(body)

    def upload_manifest(self, target: UploadTarget, manifest: ManifestSource) -> int:
        """Refinery takes its manifest with :meth:`create_operation`; nothing is left to upload."""
        raise ConfigurationError(
            f"Refinery job {target.operation_id} already has its manifest: it is sent with the create call"
        )

    def job(self, job_id: str) -> dict[str, Any]:
        """The raw job object."""
        body = self._api("GET", job_path(job_id), what="job status", job_id=job_id)
        return _object(body, f"Refinery job {job_id}: status")

    def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The job's status; ``topic`` and ``model`` are not used."""
        return parse_job(self.job(operation_id), operation_id)

    # --- results ------------------------------------------------------------------------------

    def delivery_url(self, job: Mapping[str, Any], job_id: str) -> str | None:
        """Where a job's results were delivered, or ``None`` when they are served by the export."""
        bucket: Any = self.settings.delivery_bucket
        if "delivery" in job:
            delivery = job["delivery"]
            bucket = delivery.get("bucket") if isinstance(delivery, dict) else None
        if not bucket:
            return None
        if not isinstance(bucket, str) or not _BUCKET.match(bucket):
            raise UnexpectedResponseError(f"Refinery job {job_id}: delivery bucket is not a valid bucket name")
        return f"s3://{bucket}/{self.settings.delivery_key.replace('{job_id}', job_id)}"

    def results_available(self, operation: Operation) -> bool:
        """Whether a completed job's results can still be read: a one-byte ranged export, or opening
        the delivered object."""
        if operation.state is not OperationState.COMPLETE:
            return False
        job_id = operation.operation_id
        delivered = self.delivery_url(self.job(job_id), job_id)
        try:
            if delivered:
                with self._store("delivered results").open(delivered):
                    return True
            with _service_errors("export availability check"):
                response = self._http.request(
                    "GET",
                    self._url(job_path(job_id) + "/export"),
                    headers=lambda: {**self._headers(), "Range": "bytes=0-0"},
                    what="export availability check",
                    operation_id=job_id,
                    rate_limited=True,
                    stream=True,
                )
        except (NotFoundError, ConflictError):
            return False
        except InvalidRequestError as exc:
            if exc.status_code == 416:  # an empty export has no first byte, but it exists
                return True
            raise
        response.close()
        return True

    def download_results(
        self,
        operation_id: str,
        topic: str,
        output: IO[bytes],
        metadata: IO[bytes] | None = None,
        model: str | None = None,
    ) -> tuple[int, int]:
        """Stream the job's results into ``output`` (from the export, or from the delivery bucket)
        and the job object, the label spec and where the results came from into ``metadata``.

        :raises OperationFailedError: the job failed.
        :raises ConflictError: the export still answers 409 after the bounded waits.
        """
        job = self.job(operation_id)
        operation = parse_job(job, operation_id)
        if operation.state is OperationState.FAILED:
            raise OperationFailedError(operation_id, operation.error)
        delivered = self.delivery_url(job, operation_id)
        if delivered:
            if operation.state is not OperationState.COMPLETE:
                job = self._wait_completed(operation_id)
            written = self._copy_delivered(delivered, output, operation_id)
        else:
            written = self._download_export(operation_id, output)
            if operation.state is not OperationState.COMPLETE:
                job = self.job(operation_id)
        meta_bytes = 0
        if metadata is not None:
            document = {
                "job": {k: v for k, v in job.items() if k not in _CREDENTIAL_KEYS},
                "label_spec": self.settings.label_spec(topic),
                "consensus_threshold": self.settings.consensus_threshold,
                "task_type": self.settings.task_type,
                "results": delivered or "export",
            }
            encoded = json.dumps(document, separators=(",", ":")).encode()
            metadata.write(encoded)
            meta_bytes = len(encoded)
        return written, meta_bytes

    def _not_ready(self, job_id: str, waited: float) -> ConflictError:
        return ConflictError(
            f"Refinery job {job_id} is not completed yet after waiting {waited:.0f} s for its results; "
            "wait for the job to complete, then download again",
            status_code=409,
            operation_id=job_id,
        )

    def _wait_completed(self, job_id: str) -> dict[str, Any]:
        """Poll a job until it completes, for at most ``export_wait_attempts`` waits."""
        waited = 0.0
        for attempt in range(self.settings.export_wait_attempts):
            delay = poll_delay(attempt, self.settings.export_wait_base)
            time.sleep(delay)
            waited += delay
            job = self.job(job_id)
            operation = parse_job(job, job_id)
            if operation.state is OperationState.FAILED:
                raise OperationFailedError(job_id, operation.error)
            if operation.state is OperationState.COMPLETE:
                return job
        raise self._not_ready(job_id, waited)

    def _download_export(self, job_id: str, sink: IO[bytes]) -> int:
        """The export, streamed; a 409 is waited out a bounded number of times."""
        waited = 0.0
        for attempt in range(self.settings.export_wait_attempts + 1):
            try:
                return self._stream_export(job_id, sink)
            except ConflictError as exc:
                operation = self.get_operation(job_id, "")
                if operation.state is OperationState.FAILED:
                    raise OperationFailedError(job_id, operation.error) from None
                if attempt == self.settings.export_wait_attempts:
                    raise self._not_ready(job_id, waited) from exc
            delay = poll_delay(attempt, self.settings.export_wait_base)
            time.sleep(delay)
            waited += delay
        raise self._not_ready(job_id, waited)  # pragma: no cover - the loop always returns or raises

    def _stream_export(self, job_id: str, sink: IO[bytes]) -> int:
        """One export download with ``Content-Length`` checks; a broken body starts over (bounded)."""
        what = f"export of job {job_id}"
        policy = self.settings.http.retry
        start = sink.tell()
        attempt = 0
        while True:
            attempt += 1
            sink.seek(start)
            sink.truncate()
            with _service_errors(what):
                response = self._http.request(
                    "GET",
                    self._url(job_path(job_id) + "/export"),
                    headers=lambda: {**self._headers(), "Accept": "application/x-ndjson"},
                    what=what,
                    operation_id=job_id,
                    rate_limited=True,
                    stream=True,
                )
            written = 0
            try:
                with response:
                    expected = declared_length(response.headers)
                    for chunk in response.iter_content(CHUNK_BYTES):
                        sink.write(chunk)
                        written += len(chunk)
                if expected is not None and written != expected:
                    raise IncompleteDownloadError(f"{what}: got {written} bytes of {expected}")
            except (requests.RequestException, IncompleteDownloadError) as exc:
                if not policy.can_retry(attempt):
                    raise IncompleteDownloadError(
                        f"{what}: broke off after {written} bytes ({describe_exception(exc)}); run the download again"
                    ) from None
                delay = policy.delay(attempt)
                log.warning("Refinery %s broke off after %d bytes; starting over in %.1f s", what, written, delay)
                time.sleep(delay)
                continue
            sink.flush()
            return written

    def _copy_delivered(self, url: str, sink: IO[bytes], job_id: str) -> int:
        """Stream a delivered results object into ``sink``; a broken read starts over (bounded)."""
        store = self._store("delivered results")
        policy = self.settings.http.retry
        start = sink.tell()
        attempt = 0
        while True:
            attempt += 1
            sink.seek(start)
            sink.truncate()
            written = 0
            try:
                with store.open(url) as body:
                    while chunk := body.read(CHUNK_BYTES):
                        sink.write(chunk)
                        written += len(chunk)
            except NotFoundError as exc:
                raise NotFoundError(
                    f"Results of Refinery job {job_id} are not at {url}: check delivery_bucket and delivery_key",
                    status_code=exc.status_code,
                    service_message=exc.service_message,
                    operation_id=job_id,
                ) from None
            except IncompleteDownloadError as exc:
                if not policy.can_retry(attempt):
                    raise
                delay = policy.delay(attempt)
                log.warning("Refinery job %s: %s; starting over in %.1f s", job_id, exc, delay)
                time.sleep(delay)
                continue
            sink.flush()
            return written


class AsyncRefineryClient(_RefineryBase):
    """Async Refinery client for the trigger: job status only, never blocking the loop."""

    def __init__(self, settings: RefinerySettings, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = AsyncTransport(settings.http, self._read_error(), self._limiter, service="Refinery")

    async def aclose(self) -> None:
        """Release pooled connections."""
        await self._http.aclose()

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The job's status."""
        with _service_errors("job status"):
            body = await self._http.api_json(
                "GET",
                self._url(job_path(operation_id)),
                headers=self._headers,
                what="job status",
                operation_id=operation_id,
            )
        return parse_job(body, operation_id)


def service_factory() -> ServiceFactory:
    """How the registry builds Refinery clients from a connection."""
    return ServiceFactory(
        sync=lambda config, on_secret: RefineryClient(
            RefinerySettings.from_config(config), object_store=config.object_store, on_secret=on_secret
        ),
        async_=lambda config, on_secret: AsyncRefineryClient(RefinerySettings.from_config(config), on_secret=on_secret),
    )
