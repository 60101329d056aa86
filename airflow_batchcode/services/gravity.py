"""The Gravity-AI on-demand jobs API: a CSV job posted as multipart, polled, and its output fetched by link.

Wire contract: ``shared/SERVICES.md`` §4 and Gravity's job-api documentation (seed 003).

Documented: the ``X-Api-Key`` header; the envelope ``{"data", "isError", "errorMessage"}`` of every
answer (a 200 with ``isError: true`` is a failure); ``POST /api/v1/jobs`` as ``multipart/form-data``
with a JSON ``data`` part (``mimeType`` required; ``version``, ``name``, ``mapping``,
``outputMapping`` optional) and a ``file`` part; ``GET /api/v1/jobs/{id}``, ``GET /api/v1/jobs/latest``,
``PUT /api/v1/jobs/{id}`` (rename), ``GET /api/v1/jobs/result-link/{id}`` (a presigned GET URL of the
output, CSV for CSV input); the job object's fields; ``billedUsage`` in units of $0.001.

Assumed, where the documentation is silent:

- **Status.** Read case-insensitively: ``incomplete`` (and ``pending``, ``processing``, ``queued``,
  ``running``) is in progress, ``success`` is complete, ``error`` and ``fail`` are failed, with
  ``errorMessage`` or else ``statusMessage`` as the reason. Any other value is off-contract.
- **Topic and model.** The hosted project is chosen by the API key, so ``topic`` is not sent;
  ``model`` (else the connection's ``version``) is the project version.
- **Input.** The canonical manifest becomes CSV (``line,record_id,occp_text,tasks_text``), sent with
  ``mimeType: text/csv; header=present``. The default input ``mapping`` renames ``occp_text`` and
  ``tasks_text`` to the emulated model's features ``job_title`` and ``duties``; the connection's
  ``mapping`` / ``output_mapping`` extras replace it (a list of ``{source, destination, defaultValue}``
  or a ``{source: destination}`` object, also as JSON text).
- **Idempotency.** The job is named after the chunk (its stable digest name). Before posting, and
  after a POST whose answer was lost, ``/jobs/latest`` is searched for a job of that name that has
  not failed, and that job is re-attached instead of billing a second one. POSTs are never retried
  blindly. ``latest`` lists only the most recent jobs, so the search covers retries, not history.
- **Errors in the envelope** are typed by their message: "not found"/"no longer available" →
  :class:`NotFoundError`, API key problems → :class:`AuthenticationError`, "not complete" →
  :class:`ConflictError`, throttling → :class:`RateLimitedError`, anything else →
  :class:`InvalidRequestError`.
- **Output.** The result link is a secret (reported through ``on_secret``, never logged). A link
  refused with 403 (expired) is replaced by a fresh one once. The metadata written beside the output
  is ``{"job": <job object>, "request": <the data object>}``; the data object is rebuilt from the
  connection's settings, so the normaliser reads the output mapping that was used.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    ServiceError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.abs import json_kind, segment
from airflow_batchcode.services.base import ManifestSource, Operation, OperationState, SecretCallback, UploadTarget
from airflow_batchcode.services.multipart import FieldPart, FilePart, MultipartBody
from airflow_batchcode.services.ratelimit import shared_limiter
from airflow_batchcode.services.registry import ServiceConfig, ServiceFactory
from airflow_batchcode.services.transport import (
    AsyncTransport,
    ErrorReader,
    HttpSettings,
    SyncTransport,
    check_url,
    json_message_reader,
    s3_message_reader,
    scrub,
)

SERVICE = "gravity"
DEFAULT_BASE_URL = "https://on-demand.gravity-ai.com"
JOBS_PATH = "/api/v1/jobs"
CSV_MIME = "text/csv; header=present"
CSV_HEADER = ("line", "record_id", "occp_text", "tasks_text")
DEFAULT_RATE_LIMIT = 5.0

log = logging.getLogger("airflow_batchcode.services")


@dataclass(frozen=True)
class ColumnMapping:
    """One entry of Gravity's ``mapping`` / ``outputMapping``: rename ``source`` to ``destination``.

    :param default_value: the value used when the source is empty (``None`` sends no default).
    """

    source: str
    destination: str
    default_value: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"source": self.source, "destination": self.destination, "defaultValue": self.default_value}


DEFAULT_MAPPING = (
    ColumnMapping("occp_text", "job_title", ""),
    ColumnMapping("tasks_text", "duties", ""),
)
"""The input mapping sent when the connection names none: the canonical fields to the model's features."""


def parse_mapping(value: Any, what: str) -> tuple[ColumnMapping, ...] | None:
    """Read a mapping setting: ``None``, a list of ``{source, destination, defaultValue?}``, a
    ``{source: destination}`` object, or either as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigurationError(f"{what} must be JSON: a list of {{source, destination}} objects") from None
    if isinstance(value, dict):
        value = [{"source": k, "destination": v} for k, v in value.items()]
    if not isinstance(value, list | tuple):
        raise ConfigurationError(f"{what} must be a list of {{source, destination, defaultValue}} objects")
    entries = []
    for index, item in enumerate(value):
        if isinstance(item, ColumnMapping):
            entries.append(item)
            continue
        source = item.get("source") if isinstance(item, dict) else None
        destination = item.get("destination") if isinstance(item, dict) else None
        if not isinstance(source, str) or not source or not isinstance(destination, str) or not destination:
            raise ConfigurationError(f"{what} entry {index} needs a non-empty source and destination")
        default = item.get("defaultValue")
        entries.append(ColumnMapping(source, destination, None if default is None else str(default)))
    return tuple(entries)


@dataclass(frozen=True)
class GravitySettings:
    """What a Gravity client needs to know.

    :param base_url: API origin (``https://on-demand.gravity-ai.com``).
    :param api_key: the ``X-Api-Key`` value (hidden from ``repr``).
    :param version: project version to run; ``None`` = the latest active one.
    :param mapping: input column mapping; ``None`` sends none.
    :param output_mapping: output column mapping; ``None`` sends none.
    :param rate_limit: API requests per second for this key in this process (0 disables it).
    :param http: timeouts, retries and URL rules.
    """

    base_url: str = DEFAULT_BASE_URL
    api_key: str = field(default="", repr=False)
    version: str | None = None
    mapping: tuple[ColumnMapping, ...] | None = DEFAULT_MAPPING
    output_mapping: tuple[ColumnMapping, ...] | None = None
    rate_limit: float = DEFAULT_RATE_LIMIT
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        if not self.base_url or urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"Gravity base URL must be an http(s) origin, got {self.base_url!r}")
        if not self.api_key:
            raise ConfigurationError("Gravity needs an API key (the connection's password)")
        check_url(self.api_root, allow_insecure_http=self.http.allow_insecure_http, what="API URL")

    @property
    def api_root(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def limiter_key(self) -> str:
        digest = hashlib.sha256(self.api_key.encode()).hexdigest()[:16]
        return f"{SERVICE}:{self.api_root}:{digest}"


def settings_from_config(config: ServiceConfig) -> GravitySettings:
    """Read a connection's settings: the password is the API key; extras ``version``, ``mapping``,
    ``output_mapping`` and ``rate_limit``."""
    extra = config.extra
    return GravitySettings(
        base_url=config.base_url or DEFAULT_BASE_URL,
        api_key=config.password,
        version=config.text("version"),
        mapping=parse_mapping(extra["mapping"], "mapping") if "mapping" in extra else DEFAULT_MAPPING,
        output_mapping=parse_mapping(extra.get("output_mapping"), "output_mapping"),
        rate_limit=config.number("rate_limit", DEFAULT_RATE_LIMIT),
        http=config.http_settings(),
    )


def service_factory() -> ServiceFactory:
    """How the registry builds Gravity clients."""
    return ServiceFactory(
        sync=lambda config, on_secret: GravityClient(settings_from_config(config), on_secret=on_secret),
        async_=lambda config, on_secret: AsyncGravityClient(settings_from_config(config), on_secret=on_secret),
    )


# --- the manifest as CSV -------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(manifest: ManifestSource) -> Iterator[IO[bytes]]:
    if isinstance(manifest, Path):
        with manifest.open("rb") as handle:
            yield handle
    else:
        yield manifest


def _record(raw: bytes, line: int) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("occp_text"), str)
        or not isinstance(record.get("tasks_text"), str)
    ):
        raise ConfigurationError(f"Manifest line {line} is not a JSON object with occp_text and tasks_text strings")
    return record


def manifest_to_csv(manifest: ManifestSource, sink: IO[bytes]) -> int:
    """Stream the canonical JSONL manifest into ``sink`` as Gravity's CSV input; return the rows written.

    Each row carries its 0-based manifest line number in ``line`` so results join back; blank
    lines are skipped. Quoting follows RFC 4180 (fields with commas, quotes or line breaks quoted).
    """
    text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
    rows = 0
    try:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(CSV_HEADER)
        with _opened(manifest) as source:
            for line, raw in enumerate(source):
                if not raw.strip():
                    continue
                record = _record(raw, line)
                record_id = record.get("recordId")
                writer.writerow(
                    (line, "" if record_id is None else record_id, record["occp_text"], record["tasks_text"])
                )
                rows += 1
        text.flush()
    finally:
        text.detach()
    return rows


def upload_filename(name: str | None) -> str:
    """The ``file`` part's file name (Gravity's default job name): the job name made path-safe."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "manifest").strip("._")[:100]
    return f"{stem or 'manifest'}.csv"


# --- reading answers -----------------------------------------------------------------------------

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
    if not isinstance(found, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", found):
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
    progress: dict[str, Any] = {
        name: job[name]
        for name in PROGRESS_FIELDS
        if isinstance(job.get(name), int | float) and not isinstance(job.get(name), bool)
    }
    if message and state is not OperationState.FAILED:
        progress["statusMessage"] = message[:200]
    return Operation(operation_id=job_id, state=state, error=error, raw_status=raw, progress=progress)


def job_path(job_id: str) -> str:
    return f"{JOBS_PATH}/{segment(job_id, 'job id')}"


# --- clients -------------------------------------------------------------------------------------


class _GravityBase:
    """What the sync and async clients share: settings, limiter, headers, secret handling."""

    service = SERVICE

    def __init__(self, settings: GravitySettings, *, on_secret: SecretCallback | None = None) -> None:
        self.settings = settings
        self._on_secret = on_secret
        self._limiter = shared_limiter(settings.limiter_key, settings.rate_limit)
        self._report_secret(settings.api_key)
        self._read_error = self._error_reader()

    def _report_secret(self, value: str | None) -> None:
        if value and self._on_secret is not None:
            self._on_secret(value)

    def _headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.settings.api_key, "Accept": "application/json"}

    def _clean(self, message: str | None) -> str | None:
        """A service message without our API key or URL query strings (an echo must not leak)."""
        return scrub(message, {"Authorization": self.settings.api_key})

    def _error_reader(self) -> ErrorReader:
        read = json_message_reader("errorMessage", "message", "title", "error")
        return lambda status, body, content_type: self._clean(read(status, body, content_type))

    def _url(self, path: str) -> str:
        return self.settings.api_root + path

    def _data(self, body: Any, what: str, operation_id: str | None = None) -> Any:
        return unwrap(body, what, operation_id, self._clean)


class GravityClient(_GravityBase):
    """Synchronous client of the Gravity-AI on-demand jobs API.

    :param settings: where and with which key to connect.
    :param on_secret: called with every secret learnt (the API key, result links) so callers can mask it.
    """

    input_with_create = True
    output_name = "output.csv"

    def __init__(self, settings: GravitySettings, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = SyncTransport(settings.http, self._read_error, self._limiter, service="Gravity")
        single = replace(settings.http, retry=replace(settings.http.retry, max_attempts=1))
        self._post = SyncTransport(single, self._read_error, self._limiter, service="Gravity")

    def __enter__(self) -> GravityClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()
        self._post.close()

    def _api(self, method: str, path: str, *, what: str, operation_id: str | None = None, **kwargs: Any) -> Any:
        body = self._http.api_json(
            method, self._url(path), headers=self._headers, what=what, operation_id=operation_id, **kwargs
        )
        return self._data(body, what, operation_id)

    # --- jobs -----------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job object."""
        return parse_job(
            self._api("GET", job_path(job_id), what="job status", operation_id=job_id), "Gravity job", job_id
        )

    def latest_jobs(self) -> list[dict[str, Any]]:
        """The account's most recent jobs, as the service lists them (most recent first)."""
        data = self._api("GET", f"{JOBS_PATH}/latest", what="latest jobs")
        if data is None:
            return []
        if not isinstance(data, list):
            raise UnexpectedResponseError(f"Gravity latest jobs: data is {json_kind(data)}, not a list")
        return [parse_job(item, f"Gravity latest jobs entry {index}") for index, item in enumerate(data)]

    def rename_job(self, job_id: str, name: str) -> dict[str, Any]:
        """Rename a job (to find it in Gravity's UI); return the updated job object."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"A new name for Gravity job {job_id} must be a non-empty string")
        data = self._api("PUT", job_path(job_id), what="rename job", operation_id=job_id, json={"name": name})
        return parse_job(data, "Gravity rename job", job_id)

    def find_job(self, name: str) -> dict[str, Any] | None:
        """The most recent job called ``name`` among the latest jobs that has not failed, if any."""
        matches = []
        for job in self.latest_jobs():
            if job.get("name") != name:
                continue
            try:
                state = job_operation(job).state
            except UnexpectedResponseError:
                continue
            if state is not OperationState.FAILED:
                matches.append(job)
        if not matches:
            return None
        return max(matches, key=lambda job: str(job.get("createdDateUtc") or ""))

    def result_link(self, job_id: str) -> str:
        """A fresh presigned link to the job's output file (a secret: reported, never logged)."""
        data = self._api(
            "GET",
            f"{JOBS_PATH}/result-link/{segment(job_id, 'job id')}",
            what="result link",
            operation_id=job_id,
        )
        if not isinstance(data, str) or not data:
            raise UnexpectedResponseError(f"Gravity result link of job {job_id}: data is {json_kind(data)}, not a URL")
        self._report_secret(data)
        check_url(data, allow_insecure_http=self.settings.http.allow_insecure_http, what="result link")
        return data

    def request_data(self, name: str | None, version: str | None = None) -> dict[str, Any]:
        """The ``data`` part of a job submission for these settings (``version`` overrides the connection's)."""
        data: dict[str, Any] = {"mimeType": CSV_MIME}
        version = version or self.settings.version
        if name:
            data["name"] = name
        if version:
            data["version"] = version
        if self.settings.mapping is not None:
            data["mapping"] = [entry.to_json() for entry in self.settings.mapping]
        if self.settings.output_mapping is not None:
            data["outputMapping"] = [entry.to_json() for entry in self.settings.output_mapping]
        return data

    # --- the BatchCodeClient protocol ------------------------------------------------------------

    def create_operation(
        self, topic: str, model: str | None = None, *, manifest: ManifestSource | None = None, name: str | None = None
    ) -> UploadTarget:
        """Submit the manifest as a CSV job, or re-attach to the job already submitted under ``name``.

        :param topic: not sent (the API key selects the hosted project).
        :param model: the project version (else the connection's ``version``, else the latest).
        :param manifest: the canonical JSONL manifest, streamed into a temporary CSV file.
        :param name: the job's stable name (the chunk's digest name): the key of idempotency.
        """
        if manifest is None:
            raise ConfigurationError("Gravity takes its input with the job: create_operation needs manifest=")
        if name:
            existing = self.find_job(name)
            if existing is not None:
                log.info("Gravity job %s named %r already exists: re-attaching to it", existing["id"], name)
                return UploadTarget(operation_id=existing["id"], upload_url="")
        data = self.request_data(name, model)
        with tempfile.TemporaryFile(prefix="gravity-", suffix=".csv") as csv_file:
            if manifest_to_csv(manifest, csv_file) == 0:
                raise ConfigurationError("The manifest has no records: there is nothing to send to Gravity")
            csv_file.seek(0)
            body = MultipartBody(
                [
                    FieldPart("data", json.dumps(data).encode(), "application/json"),
                    FilePart("file", upload_filename(name), csv_file, "text/csv"),
                ]
            )
            job = self._submit(body, name)
        log.info("Gravity job %s created: status %r, %s records", job["id"], job.get("status"), job.get("recordCount"))
        return UploadTarget(operation_id=job["id"], upload_url="")

    def _submit(self, body: MultipartBody, name: str | None) -> dict[str, Any]:
        """POST the job once per try; after an answer that may have been lost, look for the job by name first."""
        what = "create job"
        policy = self.settings.http.retry
        headers = lambda: {**self._headers(), "Content-Type": body.content_type, "Content-Length": str(len(body))}  # noqa: E731
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self._post.api_json(
                    "POST", self._url(JOBS_PATH), headers=headers, what=what, body_factory=lambda: body
                )
                return parse_job(self._data(answer, what), "Gravity create job")
            except (TransportError, ServerError, RateLimitedError) as exc:
                if isinstance(exc, QuotaExceededError):
                    raise
                retry_after = exc.retry_after if isinstance(exc, ServiceError) else None
                if name and not isinstance(exc, RateLimitedError):
                    existing = self.find_job(name)
                    if existing is not None:
                        log.warning("Gravity %s: the answer was lost but job %s was created", what, existing["id"])
                        return existing
                if not policy.can_retry(attempt, retry_after):
                    raise
                delay = policy.delay(attempt, retry_after)
                log.warning("Gravity %s: try %d failed (%s); retrying in %.1f s", what, attempt, exc, delay)
                time.sleep(delay)

    def upload_manifest(self, target: UploadTarget, manifest: ManifestSource) -> int:
        """Not part of Gravity's flow: the manifest goes with :meth:`create_operation`."""
        raise ConfigurationError(
            f"Gravity job {target.operation_id} already has its input: Gravity takes the manifest with the job"
        )

    def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The job's status as an operation."""
        return job_operation(self.get_job(operation_id))

    def results_available(self, operation: Operation) -> bool:
        """Whether a complete job's output can still be fetched: a fresh link answers a one-byte ranged GET."""
        if operation.state is not OperationState.COMPLETE:
            return False
        try:
            url = self.result_link(operation.operation_id)
        except (NotFoundError, ConflictError):
            return False
        try:
            response = self._http.request(
                "GET",
                url,
                headers=lambda: {"Range": "bytes=0-0"},
                what="result availability check",
                operation_id=operation.operation_id,
                read_error=s3_message_reader,
                stream=True,
            )
        except (NotFoundError, AuthenticationError):
            return False  # S3 answers 403 for a deleted object when the link may not list the bucket
        except InvalidRequestError as exc:
            if exc.status_code == 416:
                return True  # an empty file: it exists
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
        """Stream the job's output CSV into ``output`` and ``{"job", "request"}`` as JSON into ``metadata``.

        :raises UnexpectedResponseError: the job is not complete.
        :raises NotFoundError: the output file is gone.
        """
        job = self.get_job(operation_id)
        operation = job_operation(job)
        if operation.state is not OperationState.COMPLETE:
            raise UnexpectedResponseError(
                f"Gravity job {operation_id} is {operation.state.value} (status {operation.raw_status!r}), "
                "not complete: nothing to download"
            )
        output_bytes = self._download_fresh(operation_id, output)
        metadata_bytes = 0
        if metadata is not None:
            name = job.get("name") if isinstance(job.get("name"), str) else None
            document = {"job": job, "request": self.request_data(name, model)}
            payload = json.dumps(document, ensure_ascii=False).encode()
            metadata.write(payload)
            metadata.flush()
            metadata_bytes = len(payload)
        return output_bytes, metadata_bytes

    def _download_fresh(self, job_id: str, sink: IO[bytes]) -> int:
        """Download the output, asking once for a fresh link if the first one was refused (expired)."""
        what = f"download output of job {job_id}"
        start = sink.tell()
        try:
            try:
                return self._http.download(self.result_link(job_id), sink, what=what, read_error=s3_message_reader)
            except AuthenticationError:
                sink.seek(start)
                sink.truncate()
                return self._http.download(self.result_link(job_id), sink, what=what, read_error=s3_message_reader)
        except NotFoundError as exc:
            raise NotFoundError(
                "Output file is gone: the service keeps job outputs for a limited time; create the job again",
                status_code=exc.status_code,
                service_message=exc.service_message,
                operation_id=job_id,
            ) from None


class AsyncGravityClient(_GravityBase):
    """Async Gravity client for the trigger: job status only, never blocking the event loop."""

    def __init__(self, settings: GravitySettings, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = AsyncTransport(settings.http, self._read_error, self._limiter, service="Gravity")

    async def aclose(self) -> None:
        """Release pooled connections."""
        await self._http.aclose()

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The job's status as an operation."""
        what = "job status"
        body = await self._http.api_json(
            "GET", self._url(job_path(operation_id)), headers=self._headers, what=what, operation_id=operation_id
        )
        return job_operation(parse_job(self._data(body, what, operation_id), "Gravity job", operation_id))
