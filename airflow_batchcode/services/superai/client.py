"""The super.ai clients: create a batch with its inputs, follow it, download every job's response."""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any
from urllib.parse import quote

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    ServerError,
    ServiceError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.apikey import ApiKeyBase, ApiKeyClient, AsyncApiKeyClient
from airflow_batchcode.services.base import ManifestSource, Operation, OperationState, SecretCallback, UploadTarget
from airflow_batchcode.services.http.bodies import FileBody
from airflow_batchcode.services.parsing import require_object
from airflow_batchcode.services.superai.batches import (
    PENDING_STATES,
    Batch,
    JobsPage,
    batch_operation,
    created_since,
    of_batch,
    output_line,
    parse_batch,
    parse_jobs_page,
    response_of,
)
from airflow_batchcode.services.superai.create import parse_create, write_create_body
from airflow_batchcode.services.superai.settings import MAX_PAGE_SIZE, SERVICE, SuperAiSettings, identifier

log = logging.getLogger("airflow_batchcode.services")

_MAX_CANCEL_ROUNDS = 10_000


class _SuperAiBase(ApiKeyBase[SuperAiSettings]):
    """super.ai's part of what the sync and async clients share: the ``API-KEY`` header, the app's paths,
    and clearer errors for a refused key or an invisible batch."""

    service = SERVICE
    key_header = "API-KEY"
    error_keys = ("message", "error", "detail")

    def __init__(self, settings: SuperAiSettings, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._app = quote(settings.app_uuid, safe="")
        self._report_secret(settings.callback_url)

    def _batch_path(self, batch_id: str) -> str:
        return f"/apps/{self._app}/batches/{quote(identifier(batch_id, 'batch id'), safe='')}"

    def _job_path(self, job_id: str) -> str:
        return f"/jobs/{quote(identifier(job_id, 'job id'), safe='')}"

    @property
    def _jobs_path(self) -> str:
        """The app's job list, ``GET /apps/{app_uuid}/jobs`` (every batch's jobs)."""
        return f"/apps/{self._app}/jobs"

    @staticmethod
    def _page_params(page: int, size: int, states: Sequence[str] | None, since: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"page": page, "size": size}
        if states:
            params["statusIn"] = list(states)
        if since:
            params["createdStartDate"] = since
        return params

    def _explain(self, exc: ServiceError, operation_id: str | None = None, what: str = "") -> ServiceError:
        """A clearer error for a refused key or an invisible batch ``operation_id`` (same type, same status)."""
        if isinstance(exc, AuthenticationError):
            text = "super.ai refused the API key: check the connection's password (the account's API key)"
        elif isinstance(exc, NotFoundError) and operation_id:
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
            operation_id=operation_id or exc.operation_id,
            retry_after=exc.retry_after,
        )


class SuperAiClient(_SuperAiBase, ApiKeyClient[SuperAiSettings]):
    """Synchronous super.ai client: create a batch with its inputs, follow it, download every job's response.

    :param settings: where and who to connect as.
    :param on_secret: called with every secret learnt (API key, callback URL) so callers can mask it.
    """

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
        """POST the inputs: retried when the service answered that it did not take them (429, 500, 503),
        never after a lost answer, a 502 or a 504 (super.ai has no idempotency key, and a second
        batch would be billed)."""
        what = f"create {count} super.ai jobs"
        try:
            with self._service_errors(what):
                return self._http.api_json(
                    "POST",
                    self._url(f"/apps/{self._app}/jobs"),
                    headers=lambda: {**self._headers(), "Content-Type": "application/json"},
                    what=what,
                    body_factory=lambda: body,
                    idempotent=False,
                )
        except (TransportError, ServerError) as exc:
            if not exc.answer_lost:  # the service answered that it did not take them, every try
                raise
            found = f" (look for metadata batchcode_name={name!r})" if name else ""
            raise TransportError(
                f"{exc}. The batch may have been created all the same: check the app's batches in super.ai"
                f"{found} and cancel it before running again, to avoid paying for the jobs twice"
            ) from None

    def upload_manifest(self, target: UploadTarget, manifest: ManifestSource) -> int:
        """Nothing to do: the inputs went with :meth:`create_operation`. :return: 0 bytes sent."""
        return 0

    # --- following ----------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> Batch:
        """The job batch object."""
        body = self._api("GET", self._batch_path(batch_id), what="super.ai batch status", operation_id=batch_id)
        return parse_batch(body, batch_id)

    def list_jobs(
        self,
        batch_id: str,
        page: int = 0,
        size: int = MAX_PAGE_SIZE,
        states: Sequence[str] = (),
        since: str | None = None,
    ) -> JobsPage:
        """One page (0-based) of the app's jobs, from ``since`` (``createdStartDate``) on, optionally only those
        in ``states``; :func:`of_batch` picks the batch's own."""
        body = self._api(
            "GET",
            self._jobs_path,
            what=f"list jobs of super.ai app (page {page}, for batch {batch_id})",
            operation_id=batch_id,
            params=self._page_params(page, size, states, since),
        )
        return parse_jobs_page(body, batch_id)

    def iter_job_pages(
        self, batch_id: str, states: Sequence[str] = (), since: str | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """The batch's jobs, a page of the app's job list at a time (pages without any of them are skipped)."""
        page = 0
        while True:
            listed = self.list_jobs(batch_id, page, self.settings.page_size, states, since)
            mine = of_batch(listed, batch_id)
            if mine:
                yield mine
            page += 1
            if not listed.jobs or page >= listed.pages:
                return

    def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The batch's state: one request while ingesting, then the app's live jobs from the batch's creation on."""
        return self._status(operation_id)[1]

    def _status(self, batch_id: str) -> tuple[Batch, Operation]:
        batch = self.get_batch(batch_id)
        pending = None
        if batch.processed and batch.valid_count:
            live = [job for jobs in self.iter_job_pages(batch_id, PENDING_STATES, created_since(batch)) for job in jobs]
            pending = JobsPage(jobs=live, pages=1, total=len(live))
        return batch, batch_operation(batch, pending)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """One job object."""
        return require_object(self._api("GET", self._job_path(job_id), what=f"super.ai job {job_id}"), "super.ai job")

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
        return response_of(body)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a SCHEDULED, IN_PROGRESS or SUSPENDED job; return the job object."""
        body = self._api("POST", self._job_path(job_id) + "/cancel", what=f"cancel super.ai job {job_id}")
        return require_object(body, "super.ai cancel job")

    def cancel_batch(self, batch_id: str) -> int:
        """Cancel every live job of a batch; return how many were cancelled.

        A job that settles between the listing and its cancel (409) is skipped.
        """
        since = created_since(self.get_batch(batch_id))
        cancelled = 0
        tried: set[str] = set()
        for _ in range(_MAX_CANCEL_ROUNDS):
            live = [j for jobs in self.iter_job_pages(batch_id, PENDING_STATES, since) for j in jobs]
            live = [job for job in live if job["id"] not in tried]
            if not live:
                break
            for job in live:
                tried.add(job["id"])
                try:
                    self.cancel_job(job["id"])
                except ConflictError:
                    continue
                cancelled += 1
        return cancelled

    # --- results ------------------------------------------------------------------------------

    def results_available(self, operation: Operation) -> bool:
        """Whether a complete batch's responses can still be read: one completed job's response is tried."""
        if operation.state is not OperationState.COMPLETE:
            return False
        batch_id = operation.operation_id
        done = next(iter(self.iter_job_pages(batch_id, ("COMPLETED",), created_since(self.get_batch(batch_id)))), [])
        if not done:
            return True
        try:
            self.get_job_response(done[0]["id"], operation.operation_id)
        except NotFoundError:
            return False
        return True

    def _download(self, operation_id: str, topic: str, output: IO[bytes], model: str | None) -> tuple[int, Any]:
        """One JSONL line per job (page by page, responses fetched a few at a time); as metadata the batch
        object, with the jobs' state counts.

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
            for jobs in self.iter_job_pages(operation_id, (), created_since(batch)):
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
        summary = {"app_uuid": self.settings.app_uuid, "jobs_listed": len(seen), "job_states": dict(states)}
        return written, {**batch.raw, "batchcode": summary}


class AsyncSuperAiClient(_SuperAiBase, AsyncApiKeyClient[SuperAiSettings]):
    """Async super.ai status client for the trigger: the batch, then its live jobs a page at a time, never blocking."""

    async def _batch(self, batch_id: str) -> Batch:
        body = await self._api("GET", self._batch_path(batch_id), what="super.ai batch status", operation_id=batch_id)
        return parse_batch(body, batch_id)

    async def _live_jobs(self, batch_id: str, since: str | None) -> list[dict[str, Any]]:
        """The batch's SCHEDULED, IN_PROGRESS and SUSPENDED jobs, from every page of the app's job list."""
        live: list[dict[str, Any]] = []
        page, pages = 0, 1
        while page < pages:
            body = await self._api(
                "GET",
                self._jobs_path,
                what=f"list live jobs of super.ai app (page {page}, for batch {batch_id})",
                operation_id=batch_id,
                params=self._page_params(page, self.settings.page_size, PENDING_STATES, since),
            )
            listed = parse_jobs_page(body, batch_id)
            live += of_batch(listed, batch_id)
            page, pages = page + 1, listed.pages if listed.jobs else 0
        return live

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The batch's state (see :meth:`SuperAiClient.get_operation`)."""
        batch = await self._batch(operation_id)
        pending = None
        if batch.processed and batch.valid_count:
            live = await self._live_jobs(operation_id, created_since(batch))
            pending = JobsPage(jobs=live, pages=1, total=len(live))
        return batch_operation(batch, pending)

    async def cancel_batch(self, batch_id: str) -> int:
        """Cancel every live job of a batch (see :meth:`SuperAiClient.cancel_batch`); return how many."""
        since = created_since(await self._batch(batch_id))
        cancelled = 0
        tried: set[str] = set()
        for _ in range(_MAX_CANCEL_ROUNDS):
            live = [job for job in await self._live_jobs(batch_id, since) if job["id"] not in tried]
            if not live:
                break
            for job in live:
                tried.add(job["id"])
                try:
                    path, what = self._job_path(job["id"]) + "/cancel", f"cancel super.ai job {job['id']}"
                    await self._api("POST", path, what=what)
                except ConflictError:
                    continue
                cancelled += 1
        return cancelled
