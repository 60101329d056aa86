"""The Gravity clients: submit a CSV job (or re-attach to it), follow it, fetch its output by link."""

from __future__ import annotations

import json
import logging
import tempfile
from typing import IO, Any

from airflow_batchcode.exceptions import (
    AuthenticationError,
    BatchCodeError,
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.apikey import ApiKeyBase, ApiKeyClient, AsyncApiKeyClient
from airflow_batchcode.services.base import ManifestSource, Operation, OperationState, UploadTarget
from airflow_batchcode.services.gravity.envelope import JOBS_PATH, job_operation, job_path, parse_job, unwrap
from airflow_batchcode.services.gravity.manifest import CSV_MIME, manifest_to_csv, upload_filename
from airflow_batchcode.services.gravity.settings import SERVICE, GravitySettings
from airflow_batchcode.services.http.errors import s3_message_reader
from airflow_batchcode.services.http.settings import check_url
from airflow_batchcode.services.links import download_fresh, read_first_byte
from airflow_batchcode.services.multipart import FieldPart, FilePart, MultipartBody
from airflow_batchcode.services.parsing import json_kind, segment

log = logging.getLogger("airflow_batchcode.services")


class _GravityBase(ApiKeyBase[GravitySettings]):
    """Gravity's part of what the sync and async clients share: the ``X-Api-Key`` header and the
    envelope every answer comes in."""

    service = SERVICE
    key_header = "X-Api-Key"
    error_keys = ("errorMessage", "message", "title", "error")

    def _data(self, body: Any, what: str, operation_id: str | None = None) -> Any:
        """The envelope's ``data``; a typed error (its message cleaned) when ``isError`` is true."""
        return unwrap(body, what, operation_id, self._clean)


class GravityClient(_GravityBase, ApiKeyClient[GravitySettings]):
    """Synchronous client of the Gravity-AI on-demand jobs API.

    :param settings: where and with which key to connect.
    :param on_secret: called with every secret learnt (the API key, result links) so callers can mask it.
    """

    output_name = "output.csv"

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
        """POST the job, retried as the policy says; after a lost answer the job is looked up by name
        first (Gravity has no idempotency key: without a name a lost answer is final)."""
        what = "create job"
        headers = lambda: {**self._headers(), "Content-Type": body.content_type, "Content-Length": str(len(body))}  # noqa: E731

        def post() -> dict[str, Any]:
            answer = self._once.api_json(
                "POST", self._url(JOBS_PATH), headers=headers, what=what, body_factory=lambda: body
            )
            return parse_job(self._data(answer, what), "Gravity create job")

        def created(error: BatchCodeError) -> dict[str, Any] | None:
            return self.find_job(name) if name else None

        return self._http.retrying(post, what=what, idempotent=False, recover=created if name else None)

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
            read_first_byte(self._http, url, operation.operation_id)
        except (NotFoundError, AuthenticationError):
            return False  # S3 answers 403 for a deleted object when the link may not list the bucket
        except InvalidRequestError as exc:
            if exc.status_code == 416:
                return True  # an empty file: it exists
            raise
        return True

    def _download(self, operation_id: str, topic: str, output: IO[bytes], model: str | None) -> tuple[int, Any]:
        """The job's output CSV; as metadata ``{"job", "request"}`` (the request rebuilt from the settings).

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
        name = job.get("name") if isinstance(job.get("name"), str) else None
        return output_bytes, {"job": job, "request": self.request_data(name, model)}

    def _encode_metadata(self, document: Any) -> bytes:
        return json.dumps(document, ensure_ascii=False).encode()

    def _download_fresh(self, job_id: str, sink: IO[bytes]) -> int:
        """Download the output, asking once for a fresh link if the first one was refused (expired)."""
        what = f"download output of job {job_id}"
        return download_fresh(
            lambda url, into: self._http.download(url, into, what=what, read_error=s3_message_reader),
            lambda: self.result_link(job_id),
            lambda: self.result_link(job_id),
            sink,
            gone="Output file is gone: the service keeps job outputs for a limited time; create the job again",
            operation_id=job_id,
        )


class AsyncGravityClient(_GravityBase, AsyncApiKeyClient[GravitySettings]):
    """Async Gravity client for the trigger: job status only, never blocking the event loop."""

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The job's status as an operation."""
        data = await self._api("GET", job_path(operation_id), what="job status", operation_id=operation_id)
        return job_operation(parse_job(data, "Gravity job", operation_id))
