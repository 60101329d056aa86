"""The Refinery clients: create jobs from staged manifests, follow them, read their results."""

from __future__ import annotations

import logging
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from typing import IO, Any

import requests

from airflow_batchcode.exceptions import (
    BatchCodeError,
    ConfigurationError,
    ConflictError,
    CreateOutcomeUnknownError,
    IncompleteDownloadError,
    InvalidRequestError,
    NotFoundError,
    OperationFailedError,
    RateLimitedError,
    ServerError,
    ServiceError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.apikey import ApiKeyBase, ApiKeyClient, AsyncApiKeyClient
from airflow_batchcode.services.base import (
    ManifestSource,
    ObjectStore,
    Operation,
    OperationState,
    SecretCallback,
    StagedInput,
    UploadTarget,
)
from airflow_batchcode.services.http.bodies import CHUNK_BYTES, declared_length
from airflow_batchcode.services.http.errors import describe_exception
from airflow_batchcode.services.parsing import require_object
from airflow_batchcode.services.redact import redact_url
from airflow_batchcode.services.refinery.settings import (
    BUCKET,
    PRESIGNED_SECONDS,
    SERVICE,
    RefinerySettings,
    poll_delay,
)
from airflow_batchcode.services.refinery.wire import (
    RecordUrl,
    convert_manifest,
    inline_record,
    job_path,
    parse_created,
    parse_job,
    record_object,
    translate_error,
)

log = logging.getLogger("airflow_batchcode.services")

RECORD_WORKERS = 8
"""Record objects staged at once when each record is its own object."""
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_CREDENTIAL_KEYS = frozenset({"credentials"})


class _RefineryBase(ApiKeyBase[RefinerySettings]):
    """Refinery's part of what the sync and async clients share: the Bearer key, ``{"error"}`` bodies,
    and the meaning it gives 403 and 404."""

    service = SERVICE
    key_header = "Authorization"
    key_prefix = "Bearer "
    error_keys = ("error", "message")

    def _explain(self, exc: ServiceError, operation_id: str | None = None, what: str = "") -> ServiceError:
        return translate_error(exc, what)


class RefineryClient(_RefineryBase, ApiKeyClient[RefinerySettings]):
    """Synchronous Refinery client: create jobs from canonical manifests, poll them, fetch results.

    :param settings: where and who to connect as, and how jobs are labelled.
    :param object_store: where manifests are staged and delivered results are read.
    :param on_secret: called with every secret learnt (API key, storage credentials).
    """

    def __init__(
        self,
        settings: RefinerySettings,
        *,
        object_store: ObjectStore | None = None,
        on_secret: SecretCallback | None = None,
    ) -> None:
        super().__init__(settings, on_secret=on_secret)
        self.object_store = object_store

    def _store(self, why: str) -> ObjectStore:
        if self.object_store is None:
            raise ConfigurationError(
                f"Refinery {why} through object storage: set 'manifest_location' (s3://bucket/prefix) "
                "and 'storage_conn_id' (an Airflow aws connection) in the connection's extra"
            )
        return self.object_store

    # --- jobs ---------------------------------------------------------------------------------

    def job_request(self, topic: str, staged: StagedInput) -> dict[str, Any]:
        """The body of ``POST /v1/jobs`` for a staged manifest (holds the storage credentials).

        :raises ConfigurationError: the credentials are temporary and ``session_credentials`` is ``refuse``.
        """
        if staged.credentials.get("session_token"):
            if self.settings.session_credentials == "refuse":
                raise ConfigurationError(
                    "The storage connection gives temporary AWS credentials (a session token), which Refinery's "
                    "documented credentials (access_key_id, secret_access_key, region) cannot carry: use a "
                    "long-lived key pair, or set session_credentials to 'pass' in the connection's extra"
                )
            log.warning(
                "Refinery job credentials are temporary (a session token): they are passed on as session_token, "
                "and the job cannot read its manifest once they expire"
            )
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
            workers = 1 if self.settings.record_urls == "data" else RECORD_WORKERS
            convert_manifest(manifest, converted, self._record_url(store, stem), workers=workers)
            converted.flush()
            converted.seek(0)
            staged = store.stage(converted, f"{stem}.jsonl")
        for key, value in staged.credentials.items():
            if key != "region" and isinstance(value, str):
                self._report_secret(value)
        return parse_created(self._create_job(topic, staged))

    def _create_job(self, topic: str, staged: StagedInput) -> Any:
        """``POST /v1/jobs``: a job is paid work, so an answer that may have been lost is not retried.

        Only a 429 is tried again (after its ``Retry-After``): the service refused the request before
        doing it. Refinery documents retries for exports and status polls only, so a 5xx is taken as an
        unknown outcome, like a time-out.

        :raises CreateOutcomeUnknownError: time-out, broken connection or 5xx; names the manifest.
        """
        what = f"create {topic} job"
        try:
            with self._service_errors(what):
                request = self.job_request(topic, staged)
                url = self._url("/v1/jobs")
                body = self._http.retrying(
                    lambda: self._once.api_json("POST", url, headers=self._headers, what=what, json=request),
                    what=what,
                    idempotent=False,
                    handled=(RateLimitedError,),
                    rate_limited=True,
                )
        except (TransportError, ServerError) as exc:
            raise CreateOutcomeUnknownError(
                f"Refinery {what} for manifest {redact_url(staged.url)} got no usable answer ({exc}). "
                "A job may have been created all the same: look for a job reading this manifest in Refinery "
                "before running the task again, to avoid paying for the job twice"
            ) from None
        return self._data(body, what)

    def _record_url(self, store: ObjectStore, stem: str) -> RecordUrl:
        """How each record is referenced (``record_urls``): its own object beside the manifest, by its
        store URL or a presigned https URL, or (opt-in) a ``data:`` URL in the manifest."""
        mode = self.settings.record_urls
        if mode == "data":
            return inline_record
        presign = getattr(store, "presign", None)
        if mode == "presigned" and presign is None:
            raise ConfigurationError("record_urls 'presigned' needs S3 storage: the staging store cannot presign URLs")

        def staged(line: int, occp_text: str, tasks_text: str) -> str:
            url = store.put(f"{stem}.record-{line}.json", record_object(occp_text, tasks_text))
            if presign is not None and mode == "presigned":
                signed: str = presign(url, PRESIGNED_SECONDS)
                self._report_secret(signed)
                return signed
            return url

        return staged

    def upload_manifest(self, target: UploadTarget, manifest: ManifestSource) -> int:
        """Refinery takes its manifest with :meth:`create_operation`; nothing is left to upload."""
        raise ConfigurationError(
            f"Refinery job {target.operation_id} already has its manifest: it is sent with the create call"
        )

    def job(self, job_id: str) -> dict[str, Any]:
        """The raw job object."""
        body = self._api("GET", job_path(job_id), what="job status", operation_id=job_id)
        return require_object(body, f"Refinery job {job_id}: status")

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
        if not isinstance(bucket, str) or not BUCKET.match(bucket):
            raise UnexpectedResponseError(f"Refinery job {job_id}: delivery bucket is not a valid bucket name")
        return f"s3://{bucket}/{self.settings.delivery_key.replace('{job_id}', job_id)}"

    def results_available(self, operation: Operation) -> bool:
        """Whether a completed job's results can still be read: opening the delivered object, else
        (none delivered, or absent) a one-byte ranged export."""
        if operation.state is not OperationState.COMPLETE:
            return False
        job_id = operation.operation_id
        delivered = self.delivery_url(self.job(job_id), job_id)
        if delivered:
            try:
                with self._store("delivered results").open(delivered):
                    return True
            except NotFoundError:
                log.info("Refinery job %s: no delivered results at %s; checking the export", job_id, delivered)
        try:
            response = self._export("export availability check", job_id, {"Range": "bytes=0-0"})
        except (NotFoundError, ConflictError):
            return False
        except InvalidRequestError as exc:
            if exc.status_code == 416:  # an empty export has no first byte, but it exists
                return True
            raise
        response.close()
        return True

    def _download(self, operation_id: str, topic: str, output: IO[bytes], model: str | None) -> tuple[int, Any]:
        """The job's results (from the export, or from the delivery bucket); as metadata the job object,
        the label spec and where the results came from.

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
            try:
                written = self._copy_delivered(delivered, output, operation_id)
            except NotFoundError as exc:
                log.warning("%s: reading the job's export instead", exc)
                delivered = None
        if not delivered:
            written = self._download_export(operation_id, output)
            if operation.state is not OperationState.COMPLETE:
                job = self.job(operation_id)
        document = {
            "job": {k: v for k, v in job.items() if k not in _CREDENTIAL_KEYS},
            "label_spec": self.settings.label_spec(topic),
            "consensus_threshold": self.settings.consensus_threshold,
            "task_type": self.settings.task_type,
            "results": delivered or "export",
        }
        return written, document

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

    def _export(self, what: str, job_id: str, headers: Mapping[str, str]) -> requests.Response:
        """A streamed ``GET`` of the job's export, its error statuses worded as Refinery means them."""
        with self._service_errors(what):
            response: requests.Response = self._http.request(
                "GET",
                self._url(job_path(job_id) + "/export"),
                headers=lambda: {**self._headers(), **headers},
                what=what,
                operation_id=job_id,
                rate_limited=True,
                stream=True,
            )
        return response

    def _stream_export(self, job_id: str, sink: IO[bytes]) -> int:
        """One export download with ``Content-Length`` checks; a broken body starts over (bounded)."""
        what = f"export of job {job_id}"

        def copy(into: IO[bytes]) -> int:
            written = 0
            try:
                with self._export(what, job_id, {"Accept": "application/x-ndjson"}) as response:
                    expected = declared_length(response.headers)
                    for chunk in response.iter_content(CHUNK_BYTES):
                        into.write(chunk)
                        written += len(chunk)
            except requests.RequestException as exc:
                raise IncompleteDownloadError(describe_exception(exc)) from None
            if expected is not None and written != expected:
                raise IncompleteDownloadError(f"{what}: got {written} bytes of {expected}")
            return written

        def give_up(exc: BatchCodeError, written: int) -> Exception:
            return IncompleteDownloadError(
                f"{what}: broke off after {written} bytes ({describe_exception(exc)}); run the download again"
            )

        return self._restarting(what, sink, copy, give_up)

    def _copy_delivered(self, url: str, sink: IO[bytes], job_id: str) -> int:
        """Stream a delivered results object into ``sink``; a broken read starts over (bounded)."""
        store = self._store("delivered results")

        def copy(into: IO[bytes]) -> int:
            written = 0
            try:
                with store.open(url) as body:
                    while chunk := body.read(CHUNK_BYTES):
                        into.write(chunk)
                        written += len(chunk)
            except NotFoundError as exc:
                raise NotFoundError(
                    f"Results of Refinery job {job_id} are not at {url}: check delivery_bucket and delivery_key",
                    status_code=exc.status_code,
                    service_message=exc.service_message,
                    operation_id=job_id,
                ) from None
            return written

        return self._restarting(f"results of job {job_id}", sink, copy, lambda exc, written: exc)

    def _restarting(
        self,
        what: str,
        sink: IO[bytes],
        copy: Callable[[IO[bytes]], int],
        give_up: Callable[[BatchCodeError, int], Exception],
    ) -> int:
        """Run ``copy`` (``what``, for messages) into ``sink`` from where ``sink`` stands; a copy that broke off
        (:class:`IncompleteDownloadError`) is thrown away and started over while the retry policy
        allows, then ``give_up`` says what is raised.

        :return: the bytes ``copy`` wrote.
        """
        start = sink.tell()

        def attempt() -> int:
            sink.seek(start)
            sink.truncate()
            written = copy(sink)
            sink.flush()
            return written

        return self._http.retrying(
            attempt,
            what=what,
            handled=(IncompleteDownloadError,),
            give_up=lambda exc: give_up(exc, sink.tell() - start),
        )


class AsyncRefineryClient(_RefineryBase, AsyncApiKeyClient[RefinerySettings]):
    """Async Refinery client for the trigger: job status only, never blocking the loop."""

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The job's status."""
        body = await self._api("GET", job_path(operation_id), what="job status", operation_id=operation_id)
        return parse_job(body, operation_id)
