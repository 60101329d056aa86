"""super.ai job batches: one labelling job per manifest record, created in one call and read back job by job.

Wire contract: ``shared/SERVICES.md`` §3 and the job batch object of seed 002.

Documented by super.ai:

- base ``https://api.super.ai/v1``, header ``API-KEY: <key>``, error bodies carry a JSON ``message``;
- ``POST /apps/{app_uuid}/jobs`` ``{inputs | inputsFileUrl, callbackUrl?, metadata?, tags?}`` answers a
  ``batch_id``; ingestion is asynchronous (the status code only means "received");
- ``GET /apps/{app_uuid}/batches/{batch_id}``: the job batch object (``batch_processed``, ``batch_total``,
  ``valid_count``, ``total_processed``, ``invalid_index``, ``error_message``, ``errors_with_filename``, which the
  docs' own example spells ``errors_with_file``: both are read);
- ``GET /jobs/{id}``, ``GET /jobs/{id}/response``, ``POST /jobs/{id}/cancel``; job states SCHEDULED, IN_PROGRESS,
  SUSPENDED (still live), FAILED, CANCELED, EXPIRED, COMPLETED (settled);
- inline inputs of at most 4 MB; in non-strict mode the valid inputs become jobs and the invalid ones are reported.

Assumed here, and kept by the emulator (``emulator/superai_app.py``):

- the batch's jobs are listed with ``GET /apps/{app_uuid}/batches/{batch_id}/jobs?page=&size=&statusIn=`` (the
  seed says the IDs can be retrieved without naming the call; this mirrors super.ai's app-wide job list: 0-based
  ``page``, ``size``, repeated ``statusIn``) → ``{"jobs": [...], "page", "size", "pages", "total"}``, jobs in input
  order, each ``{"id", "state", "input_index", "input", "error"?}``; without ``total``, ``pages`` of a ``size=1``
  query is the count;
- create answers ``{"batch_id": ...}`` (``batchId`` is read too); ``GET /jobs/{id}/response`` answers
  ``{"response": {...}}`` or the response object itself;
- ``batch_processed`` means ingestion is over (jobs may still run): the batch is complete once no job is SCHEDULED,
  IN_PROGRESS or SUSPENDED. A processed batch with no valid input at all has failed;
- the data program ("occupation coder") takes ``{line, record_id, job_title, duties, topic}`` per input and answers
  ``{"code", "label", "confidence"}``, or ``{"code": null, "suggestions": [{code, label, confidence}, ...]}``
  when it is not confident (super.ai responses are defined by each app);
- "4 MB" is read as 4,000,000 bytes of request body (the strictest reading);
- create is retried only when the service answered 429/5xx; with no answer at all the batch may exist, so the
  error says so instead of risking a second, billed batch (super.ai documents no idempotency key).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    ServiceError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.base import ManifestSource, Operation, OperationState, SecretCallback, UploadTarget
from airflow_batchcode.services.ratelimit import shared_limiter
from airflow_batchcode.services.registry import ServiceConfig, ServiceFactory
from airflow_batchcode.services.retry import RetryPolicy
from airflow_batchcode.services.transport import (
    AsyncTransport,
    FileBody,
    HttpSettings,
    SyncTransport,
    check_url,
    is_retryable,
    json_message_reader,
)

log = logging.getLogger("airflow_batchcode.services")

SERVICE = "superai"
DEFAULT_BASE_URL = "https://api.super.ai/v1"
MAX_INLINE_BYTES = 4_000_000
"""Largest create request body sent with inline ``inputs``."""
MAX_PAGE_SIZE = 500
PENDING_STATES = ("SCHEDULED", "IN_PROGRESS", "SUSPENDED")
SETTLED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELED", "EXPIRED"})
DEFAULT_TAGS = ("airflow-batchcode",)
DEFAULT_RATE_LIMIT = 10.0
"""Requests per second per connection: super.ai documents no limit, so this is a guess (extra ``rate_limit``)."""
_MAX_CANCEL_ROUNDS = 10_000

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_read_message = json_message_reader("message", "error", "detail")


def _identifier(value: Any, what: str, error: type[Exception] = ConfigurationError) -> str:
    """``value`` as a plain identifier (letters, digits, ``.``, ``_``, ``-``) safe to put in a URL path."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _SAFE_ID.match(value):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise error(f"Invalid super.ai {what} {shown!r}: expected letters, digits, '.', '_' or '-'")
    return value


def _tags(value: Any) -> tuple[str, ...]:
    """The ``tags`` extra: a list of strings or a comma-separated string."""
    if value in (None, ""):
        return DEFAULT_TAGS
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(tag, str) for tag in items):
        raise ConfigurationError("Connection extra 'tags' must be a list of strings or a comma-separated string")
    return tuple(tag.strip() for tag in items if tag.strip())


@dataclass(frozen=True)
class SuperAiSettings:
    """What a super.ai client needs to know.

    :param base_url: API origin, with or without the ``/v1`` suffix.
    :param api_key: the account's API key (hidden from ``repr``).
    :param app_uuid: the data program (app) the jobs are created in.
    :param rate_limit: API requests per second for this connection (0 disables the limiter).
    :param page_size: jobs per page when listing a batch's jobs (at most 500).
    :param download_workers: job responses fetched at once while downloading.
    :param tags: tags put on every batch.
    :param callback_url: URL super.ai calls when a job completes (may carry a token: hidden from ``repr``).
    :param http: timeouts, retries and URL rules.
    """

    base_url: str
    api_key: str = field(repr=False)
    app_uuid: str
    rate_limit: float = DEFAULT_RATE_LIMIT
    page_size: int = MAX_PAGE_SIZE
    download_workers: int = 4
    tags: tuple[str, ...] = DEFAULT_TAGS
    callback_url: str | None = field(default=None, repr=False)
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        if not self.base_url or urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"super.ai base URL must be an http(s) origin, got {self.base_url!r}")
        if not self.api_key:
            raise ConfigurationError("super.ai needs the account's API key as the connection password")
        if not self.app_uuid:
            raise ConfigurationError(
                "super.ai needs the connection extra 'app_uuid': the UUID of the data program that codes the jobs"
            )
        _identifier(self.app_uuid, "app_uuid (connection extra)")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ConfigurationError(f"Connection extra 'page_size' must be between 1 and {MAX_PAGE_SIZE}")
        if self.download_workers < 1:
            raise ConfigurationError("Connection extra 'download_workers' must be at least 1")
        check_url(self.api_root, allow_insecure_http=self.http.allow_insecure_http, what="API URL")

    @classmethod
    def from_config(cls, config: ServiceConfig) -> SuperAiSettings:
        """Settings from a connection: ``password`` is the API key, ``extra.app_uuid`` the app."""
        return cls(
            base_url=config.base_url or DEFAULT_BASE_URL,
            api_key=config.password,
            app_uuid=config.text("app_uuid") or "",
            rate_limit=config.number("rate_limit", DEFAULT_RATE_LIMIT),
            page_size=int(config.number("page_size", MAX_PAGE_SIZE)),
            download_workers=int(config.number("download_workers", 4)),
            tags=_tags(config.extra.get("tags")),
            callback_url=config.text("callback_url"),
            http=config.http_settings(),
        )

    @property
    def api_root(self) -> str:
        """The base URL ending in ``/v1``."""
        root = self.base_url.rstrip("/")
        return root if root.endswith("/v1") else root + "/v1"

    @property
    def limiter_key(self) -> str:
        key_digest = hashlib.sha256(self.api_key.encode()).hexdigest()[:16]
        return f"{SERVICE}:{self.api_root}:{key_digest}"


# --- the create request ---------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(manifest: ManifestSource) -> Iterator[IO[bytes]]:
    if isinstance(manifest, Path):
        with manifest.open("rb") as handle:
            yield handle
    else:
        yield manifest


def _input_of(raw: bytes, line: int, topic: str) -> dict[str, Any]:
    """One canonical manifest line → the data program's input, carrying its line number."""
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("occp_text", "tasks_text")):
        raise ConfigurationError(
            f"Manifest line {line} is not a record with string occp_text and tasks_text: "
            "pass the pipeline's validated manifest"
        )
    record_id = record.get("recordId")
    return {
        "line": line,
        "record_id": None if record_id is None else str(record_id),
        "job_title": record["occp_text"],
        "duties": record["tasks_text"],
        "topic": topic,
    }


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def write_create_body(
    manifest: ManifestSource,
    sink: IO[bytes],
    *,
    topic: str,
    metadata: Mapping[str, Any],
    tags: Sequence[str],
    callback_url: str | None = None,
    limit: int = MAX_INLINE_BYTES,
) -> int:
    """Stream the create request body ``{"inputs": [...], "metadata", "tags", "callbackUrl"?}`` into ``sink``.

    Manifest lines are numbered from 0, blank lines skipped. :return: the number of inputs.
    :raises ConfigurationError: a line is not a record, the manifest is empty, or the body would pass ``limit``
        (the message says how many records fit).
    """
    tail: dict[str, Any] = {"metadata": dict(metadata), "tags": list(tags)}
    if callback_url:
        tail["callbackUrl"] = callback_url
    closing = b"]," + _encode(tail)[1:]
    sink.write(b'{"inputs":[')
    size = len(b'{"inputs":[') + len(closing)
    count = 0
    with _opened(manifest) as source:
        for raw in source:
            if not raw.strip():
                continue
            encoded = _encode(_input_of(raw, count, topic))
            size += len(encoded) + (1 if count else 0)
            if size > limit:
                raise ConfigurationError(
                    f"This manifest chunk is too large for one super.ai request: its inputs pass {limit:,} bytes "
                    f"at record {count + 1}, and super.ai takes at most 4 MB of inline inputs. Only the first "
                    f"{count} records fit: set chunk_records to {count} or fewer and run again"
                )
            sink.write(b"," + encoded if count else encoded)
            count += 1
    if not count:
        raise ConfigurationError("The manifest holds no records: there is nothing to send to super.ai")
    sink.write(closing)
    return count


# --- reading responses ----------------------------------------------------------------------------


def _require_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UnexpectedResponseError(f"{what}: the response is not a JSON object")
    return body


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
    values = _require_object(body, what)
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


def parse_create(body: Any) -> str:
    """The batch id of a create response."""
    values = _require_object(body, "super.ai create jobs")
    batch_id = values.get("batch_id", values.get("batchId"))
    if batch_id in (None, ""):
        raise UnexpectedResponseError("super.ai create jobs: the response has no batch_id")
    return _identifier(batch_id, "batch_id in the create response", UnexpectedResponseError)


@dataclass(frozen=True)
class JobsPage:
    """One page of a batch's jobs; each job has at least a string ``id`` and an upper-case ``state``."""

    jobs: list[dict[str, Any]]
    pages: int
    total: int | None


def parse_jobs_page(body: Any, batch_id: str) -> JobsPage:
    """Read one page of a batch's job list."""
    what = f"super.ai jobs of batch {batch_id}"
    values = _require_object(body, what)
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
        job_id = _identifier(item.get("id", item.get("job_id")), "job id", UnexpectedResponseError)
        jobs.append({**item, "id": job_id, "state": state.upper()})
    total_key = next((key for key in ("total", "totalElements") if values.get(key) is not None), None)
    return JobsPage(
        jobs=jobs,
        pages=_count(values, "pages", what),
        total=_count(values, total_key, what) if total_key else None,
    )


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
    error = job.get("error", job.get("error_message"))
    body = {
        "job_id": job["id"],
        "state": job["state"],
        "input": {"line": line, "record_id": record_id if isinstance(record_id, str) else None},
        "response": response,
        "error": error if isinstance(error, str) and error else None,
    }
    return _encode(body) + b"\n"


def _response_of(body: Any) -> Any:
    """The app's response from a ``GET /jobs/{id}/response`` body (wrapped or bare)."""
    if isinstance(body, dict) and "response" in body:
        return body["response"]
    return body


# --- clients --------------------------------------------------------------------------------------


class _SuperAiBase:
    """What the sync and async clients share: settings, limiter, paths, headers, secret reporting."""

    service = SERVICE

    def __init__(self, settings: SuperAiSettings, *, on_secret: SecretCallback | None = None) -> None:
        self.settings = settings
        self._on_secret = on_secret
        self._limiter = shared_limiter(settings.limiter_key, settings.rate_limit)
        self._app = quote(settings.app_uuid, safe="")
        self._report_secret(settings.api_key)
        self._report_secret(settings.callback_url)

    def _report_secret(self, value: str | None) -> None:
        if value and self._on_secret is not None:
            self._on_secret(value)

    def _read_error(self, status: int, body: bytes, content_type: str) -> str | None:
        """The service's ``message``, with the API key cut out should the service echo it."""
        message = _read_message(status, body, content_type)
        if message and self.settings.api_key in message:
            message = message.replace(self.settings.api_key, "<redacted>")
        return message

    def _headers(self) -> dict[str, str]:
        return {"API-KEY": self.settings.api_key, "Accept": "application/json"}

    def _url(self, path: str) -> str:
        return self.settings.api_root + path

    def _batch_path(self, batch_id: str) -> str:
        return f"/apps/{self._app}/batches/{quote(_identifier(batch_id, 'batch id'), safe='')}"

    def _job_path(self, job_id: str) -> str:
        return f"/jobs/{quote(_identifier(job_id, 'job id'), safe='')}"

    @staticmethod
    def _page_params(page: int, size: int, states: Sequence[str] | None) -> dict[str, Any]:
        params: dict[str, Any] = {"page": page, "size": size}
        if states:
            params["statusIn"] = list(states)
        return params

    def _explain(self, exc: ServiceError, batch_id: str | None) -> ServiceError:
        """A clearer error for a refused key or an invisible batch (same type, same status)."""
        if isinstance(exc, AuthenticationError):
            text = "super.ai refused the API key: check the connection's password (the account's API key)"
        elif isinstance(exc, NotFoundError) and batch_id:
            text = (
                f"super.ai batch not found in app {self.settings.app_uuid}: check the connection's app_uuid and "
                "API key (batches of another app or account are not visible)"
            )
        else:
            return exc
        return type(exc)(
            text,
            status_code=exc.status_code,
            service_message=exc.service_message,
            operation_id=batch_id or exc.operation_id,
            retry_after=exc.retry_after,
        )


class SuperAiClient(_SuperAiBase):
    """Synchronous super.ai client: create a batch with its inputs, follow it, download every job's response.

    :param settings: where and who to connect as.
    :param on_secret: called with every secret learnt (API key, callback URL) so callers can mask it.
    """

    input_with_create = True
    output_name = "output.jsonl"

    def __init__(self, settings: SuperAiSettings, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = SyncTransport(settings.http, self._read_error, self._limiter, service="super.ai")
        once = replace(settings.http, retry=RetryPolicy(max_attempts=1))
        self._create_http = SyncTransport(once, self._read_error, self._limiter, service="super.ai")

    def __enter__(self) -> SuperAiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()
        self._create_http.close()

    def _api(self, method: str, path: str, *, what: str, batch_id: str | None = None, **kwargs: Any) -> Any:
        try:
            return self._http.api_json(
                method, self._url(path), headers=self._headers, what=what, operation_id=batch_id, **kwargs
            )
        except ServiceError as exc:
            raise self._explain(exc, batch_id if "batches" in path else None) from None

    # --- creating -----------------------------------------------------------------------------

    def create_operation(
        self, topic: str, model: str | None = None, *, manifest: ManifestSource | None = None, name: str | None = None
    ) -> UploadTarget:
        """Create one job per manifest record in a new batch; the batch id is the operation id.

        :param model: not used: the app decides how it codes.
        :param name: recorded as ``metadata.batchcode_name`` so a batch can be found again.
        """
        if manifest is None:
            raise ConfigurationError("super.ai takes its inputs with the create call: pass the manifest")
        if not isinstance(topic, str) or not topic:
            raise ConfigurationError("super.ai needs a topic (anzsco or osca) for the data program")
        metadata = {"batchcode_name": name, "topic": topic}
        tags = [*self.settings.tags, f"topic:{topic}"]
        with tempfile.TemporaryFile(prefix="superai-create-") as body_file:
            count = write_create_body(
                manifest,
                body_file,
                topic=topic,
                metadata=metadata,
                tags=tags,
                callback_url=self.settings.callback_url,
            )
            body_file.flush()
            body_file.seek(0)
            batch_id = parse_create(self._post_create(FileBody(body_file), count, name))
        log.info("super.ai batch %s created with %d inputs", batch_id, count)
        return UploadTarget(operation_id=batch_id, upload_url="")

    def _post_create(self, body: FileBody, count: int, name: str | None) -> Any:
        """POST the inputs; retried only when the service answered that it did not take them."""
        policy = self.settings.http.retry
        what = f"create {count} super.ai jobs"
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._create_http.api_json(
                    "POST",
                    self._url(f"/apps/{self._app}/jobs"),
                    headers=lambda: {**self._headers(), "Content-Type": "application/json"},
                    what=what,
                    body_factory=lambda: body,
                )
            except TransportError as exc:
                found = f" (look for metadata batchcode_name={name!r})" if name else ""
                raise TransportError(
                    f"{exc}. The batch may have been created all the same: check the app's batches in super.ai"
                    f"{found} and cancel it before running again, to avoid paying for the jobs twice"
                ) from None
            except ServiceError as exc:
                if not is_retryable(exc) or not policy.can_retry(attempt, exc.retry_after):
                    raise self._explain(exc, None) from None
                delay = policy.delay(attempt, exc.retry_after)
                log.warning("super.ai %s: try %d failed (%s); retrying in %.1f s", what, attempt, exc, delay)
                time.sleep(delay)

    def upload_manifest(self, target: UploadTarget, manifest: ManifestSource) -> int:
        """Nothing to do: the inputs went with :meth:`create_operation`. :return: 0 bytes sent."""
        return 0

    # --- following ----------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> Batch:
        """The job batch object."""
        body = self._api("GET", self._batch_path(batch_id), what="super.ai batch status", batch_id=batch_id)
        return parse_batch(body, batch_id)

    def list_jobs(
        self, batch_id: str, page: int = 0, size: int = MAX_PAGE_SIZE, states: Sequence[str] = ()
    ) -> JobsPage:
        """One page (0-based) of the batch's jobs in input order, optionally only those in ``states``."""
        body = self._api(
            "GET",
            self._batch_path(batch_id) + "/jobs",
            what=f"list jobs of super.ai batch (page {page})",
            batch_id=batch_id,
            params=self._page_params(page, size, states),
        )
        return parse_jobs_page(body, batch_id)

    def iter_job_pages(self, batch_id: str, states: Sequence[str] = ()) -> Iterator[list[dict[str, Any]]]:
        """Every page of the batch's jobs."""
        page = 0
        while True:
            listed = self.list_jobs(batch_id, page, self.settings.page_size, states)
            if listed.jobs:
                yield listed.jobs
            page += 1
            if not listed.jobs or page >= listed.pages:
                return

    def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The batch's state: one request while ingesting, two once its jobs exist."""
        return self._status(operation_id)[1]

    def _status(self, batch_id: str) -> tuple[Batch, Operation]:
        batch = self.get_batch(batch_id)
        pending = None
        if batch.processed and batch.valid_count:
            pending = self.list_jobs(batch_id, 0, 1, PENDING_STATES)
        return batch, batch_operation(batch, pending)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """One job object."""
        return _require_object(self._api("GET", self._job_path(job_id), what=f"super.ai job {job_id}"), "super.ai job")

    def get_job_response(self, job_id: str, batch_id: str | None = None) -> Any:
        """A completed job's response (the app's output).

        :raises NotFoundError: the response is gone (super.ai keeps responses for a limited time).
        """
        try:
            body = self._api("GET", self._job_path(job_id) + "/response", what=f"response of super.ai job {job_id}")
        except NotFoundError as exc:
            raise NotFoundError(
                f"The response of super.ai job {job_id} is gone: the service keeps job responses for a limited "
                "time; clear the task group to code this chunk again",
                status_code=exc.status_code,
                service_message=exc.service_message,
                operation_id=batch_id,
            ) from None
        return _response_of(body)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a SCHEDULED, IN_PROGRESS or SUSPENDED job; return the job object."""
        body = self._api("POST", self._job_path(job_id) + "/cancel", what=f"cancel super.ai job {job_id}")
        return _require_object(body, "super.ai cancel job")

    def cancel_batch(self, batch_id: str) -> int:
        """Cancel every live job of a batch; return how many were cancelled."""
        cancelled = 0
        for _ in range(_MAX_CANCEL_ROUNDS):
            live = self.list_jobs(batch_id, 0, self.settings.page_size, PENDING_STATES).jobs
            if not live:
                break
            for job in live:
                self.cancel_job(job["id"])
                cancelled += 1
        return cancelled

    # --- results ------------------------------------------------------------------------------

    def results_available(self, operation: Operation) -> bool:
        """Whether a complete batch's responses can still be read: one completed job's response is tried."""
        if operation.state is not OperationState.COMPLETE:
            return False
        done = self.list_jobs(operation.operation_id, 0, 1, ("COMPLETED",)).jobs
        if not done:
            return True
        try:
            self.get_job_response(done[0]["id"], operation.operation_id)
        except NotFoundError:
            return False
        return True

    def download_results(
        self,
        operation_id: str,
        topic: str,
        output: IO[bytes],
        metadata: IO[bytes] | None = None,
        model: str | None = None,
    ) -> tuple[int, int]:
        """Write one JSONL line per job (page by page, responses fetched a few at a time) into ``output``,
        and the batch object, with the jobs' state counts, as JSON into ``metadata``.

        :return: bytes of output and of metadata written.
        :raises UnexpectedResponseError: the batch is not complete, or fewer jobs were listed than it holds.
        """
        batch, operation = self._status(operation_id)
        if operation.state is not OperationState.COMPLETE:
            raise UnexpectedResponseError(
                f"super.ai batch {operation_id} is {operation.state.value}, not complete: nothing to download"
            )
        states: Counter[str] = Counter()
        seen: set[str] = set()
        written = 0

        def response(job: Mapping[str, Any]) -> Any:
            return self.get_job_response(job["id"], operation_id) if job["state"] == "COMPLETED" else None

        with ThreadPoolExecutor(self.settings.download_workers, thread_name_prefix="superai-download") as pool:
            for jobs in self.iter_job_pages(operation_id):
                fresh = [job for job in jobs if job["id"] not in seen]
                seen.update(job["id"] for job in fresh)
                for job, answer in zip(fresh, pool.map(response, fresh), strict=True):
                    line = output_line(job, answer)
                    output.write(line)
                    written += len(line)
                    states[job["state"]] += 1
        output.flush()
        if len(seen) < batch.valid_count:
            raise UnexpectedResponseError(
                f"super.ai batch {operation_id} holds {batch.valid_count} jobs but only {len(seen)} were listed: "
                "download again"
            )
        meta_bytes = 0
        if metadata is not None:
            summary = {"app_uuid": self.settings.app_uuid, "jobs_listed": len(seen), "job_states": dict(states)}
            encoded = _encode({**batch.raw, "batchcode": summary})
            metadata.write(encoded)
            metadata.flush()
            meta_bytes = len(encoded)
        return written, meta_bytes


class AsyncSuperAiClient(_SuperAiBase):
    """Async super.ai status client for the trigger: at most two small requests per poll, never blocking."""

    def __init__(self, settings: SuperAiSettings, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = AsyncTransport(settings.http, self._read_error, self._limiter, service="super.ai")

    async def aclose(self) -> None:
        """Release pooled connections."""
        await self._http.aclose()

    async def _api(self, path: str, *, what: str, batch_id: str, **kwargs: Any) -> Any:
        try:
            return await self._http.api_json(
                "GET", self._url(path), headers=self._headers, what=what, operation_id=batch_id, **kwargs
            )
        except ServiceError as exc:
            raise self._explain(exc, batch_id) from None

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The batch's state (see :meth:`SuperAiClient.get_operation`)."""
        path = self._batch_path(operation_id)
        batch = parse_batch(await self._api(path, what="super.ai batch status", batch_id=operation_id), operation_id)
        pending = None
        if batch.processed and batch.valid_count:
            body = await self._api(
                path + "/jobs",
                what="list live jobs of super.ai batch",
                batch_id=operation_id,
                params=self._page_params(0, 1, PENDING_STATES),
            )
            pending = parse_jobs_page(body, operation_id)
        return batch_operation(batch, pending)


def service_factory() -> ServiceFactory:
    """How the registry builds super.ai clients from a connection."""
    return ServiceFactory(
        sync=lambda config, on_secret: SuperAiClient(SuperAiSettings.from_config(config), on_secret=on_secret),
        async_=lambda config, on_secret: AsyncSuperAiClient(SuperAiSettings.from_config(config), on_secret=on_secret),
    )


__all__ = [
    "AsyncSuperAiClient",
    "Batch",
    "JobsPage",
    "SuperAiClient",
    "SuperAiSettings",
    "batch_errors",
    "batch_operation",
    "output_line",
    "parse_batch",
    "parse_create",
    "parse_jobs_page",
    "service_factory",
    "write_create_body",
]
