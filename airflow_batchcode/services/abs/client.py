"""The ABS clients: a token from the shared cache, then batch operations, presigned transfers and
real-time coding (sync), or status polls (async)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    UnexpectedResponseError,
    UploadRejectedError,
)
from airflow_batchcode.services.abs import wire
from airflow_batchcode.services.abs.settings import DAILY_QUOTA, POLL_ADVICE, SERVICE, AbsSettings
from airflow_batchcode.services.abs.wire import ModelDescription, Topic
from airflow_batchcode.services.base import (
    Closing,
    ManifestSource,
    Operation,
    OperationState,
    SecretCallback,
    UploadTarget,
)
from airflow_batchcode.services.budget import BudgetSettings, budget_for
from airflow_batchcode.services.http.aio import AsyncTransport
from airflow_batchcode.services.http.bodies import FileBody
from airflow_batchcode.services.http.errors import s3_message_reader
from airflow_batchcode.services.http.settings import check_url
from airflow_batchcode.services.http.sync import SyncTransport
from airflow_batchcode.services.links import download_fresh, read_first_byte
from airflow_batchcode.services.redact import redact_url
from airflow_batchcode.services.tokens import Token, token_cache_for

MAX_REALTIME_RECORDS = 300

MAX_RECORD_CHARS = 300
"""Characters allowed across ``occp_text`` and ``tasks_text`` of one record."""

MAX_UPLOAD_BYTES = 5 * 1024**3

KMS_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"

SSE_HEADER = "x-amz-server-side-encryption"


class _AbsBase:
    """What the sync and async clients share: settings, token cache, request budget, secret reporting."""

    service = SERVICE
    poll_advice = POLL_ADVICE
    """The longest gap between status polls the service asks for (the poll planner stretches up to it)."""

    def __init__(self, settings: AbsSettings, *, on_secret: SecretCallback | None = None) -> None:
        self.settings = settings
        self._on_secret = on_secret
        self._tokens = token_cache_for(settings.token_url, settings.client_id, settings.client_secret)
        self.budget = budget_for(
            BudgetSettings.of(settings.limiter_key, settings.rate_limit, settings.http.quota, default_quota=DAILY_QUOTA)
        )
        self._basic = base64.b64encode(f"{settings.client_id}:{settings.client_secret}".encode()).decode()
        self._report_secret(settings.client_secret)
        self._report_secret(self._basic)

    def _report_secret(self, value: str | None) -> None:
        if value and self._on_secret is not None:
            self._on_secret(value)

    def _token_call(self) -> dict[str, Any]:
        """The keyword arguments of the token request (client credentials, not rate limited)."""
        headers = {"Authorization": f"Basic {self._basic}", "Content-Type": "application/x-www-form-urlencoded"}
        return {
            "headers": lambda: headers,
            "what": "token request",
            "rate_limited": False,
            "data": {"grant_type": "client_credentials"},
        }

    def _refused(self, error: AuthenticationError) -> AuthenticationError:
        """The token endpoint's refusal, naming the settings to check; final for every retry loop."""
        refused = AuthenticationError(
            f"token request: {redact_url(self.settings.token_url)} refused client id {self.settings.client_id!r}; "
            "check the connection's login (client id), password (client secret) and extra auth_url",
            status_code=error.status_code,
            service_message=error.service_message,
        )
        refused.stop_retrying()
        return refused

    def _accept_token(self, body: Any) -> Token:
        token = wire.parse_token(body)
        self._report_secret(token.value)
        return token

    def _accept_status(self, body: Any, operation_id: str) -> Operation:
        operation = wire.parse_status(body, operation_id)
        self._report_secret(operation.response_url)
        self._report_secret(operation.metadata_url)
        return operation

    def _forget_token(self) -> None:
        self._tokens.invalidate()

    def _url(self, path: str) -> str:
        return self.settings.api_root + path


class AbsClient(_AbsBase, Closing):
    """Synchronous client of the ABS Occupation Coding Service.

    :param settings: where and who to connect as.
    :param on_secret: called with every secret learnt (token, presigned URLs) so callers can mask it.
    """

    input_with_create = False
    output_name = "output.jsonl"

    def __init__(self, settings: AbsSettings, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = SyncTransport(settings.http, wire.read_abs_error, self.budget, service="ABS")

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    # --- auth -----------------------------------------------------------------------------

    def token(self) -> str:
        """A valid access token, from the shared cache when fresh."""
        return self._tokens.get(self._fetch_token)

    def _fetch_token(self) -> Token:
        try:
            body = self._http.api_json("POST", self.settings.token_url, **self._token_call())
        except AuthenticationError as error:
            raise self._refused(error) from None
        return self._accept_token(body)

    def _headers(self) -> Mapping[str, str]:
        return {"Authorization": self.token(), "Accept": "application/json"}

    def _api(self, method: str, path: str, *, what: str, operation_id: str | None = None, **kwargs: Any) -> Any:
        return self._http.api_json(
            method,
            self._url(path),
            headers=self._headers,
            what=what,
            operation_id=operation_id,
            on_auth_failure=self._forget_token,
            **kwargs,
        )

    # --- discovery ------------------------------------------------------------------------

    def list_topics(self) -> list[Topic]:
        """The topics (classifications) this account may code against."""
        return wire.parse_topics(self._api("GET", "/v1/topics", what="list topics"))

    def list_models(self, topic: str) -> list[ModelDescription]:
        """The models of ``topic``, as the service lists them."""
        path = f"{wire.topic_path(topic, None)}/models"
        return wire.parse_models(self._api("GET", path, what=f"list models of {topic}"), topic)

    # --- async batch coding ---------------------------------------------------------------

    def create_operation(
        self, topic: str, model: str | None = None, *, manifest: ManifestSource | None = None, name: str | None = None
    ) -> UploadTarget:
        """Create a batch-code operation (latest model unless ``model`` names one).

        ABS takes its input by a later upload: ``manifest`` and ``name`` are not used.
        """
        what = f"create {topic} operation" + (f" with model {model}" if model else "")
        body = self._api("POST", f"{wire.topic_path(topic, model)}/batch-code", what=what)
        target = wire.parse_create(body)
        self._report_secret(target.upload_url)
        return target

    def upload_manifest(self, target: UploadTarget, manifest: IO[bytes] | Path) -> int:
        """Stream a JSONL manifest to the operation's presigned URL with both KMS headers.

        :return: the bytes sent.
        :raises UploadRejectedError: the URL expired, the key is wrong, or the operation no
            longer accepts input (check its status: it may already hold this upload).
        """
        body = FileBody(manifest)
        if len(body) > MAX_UPLOAD_BYTES:
            raise ConfigurationError(
                f"Manifest for operation {target.operation_id} is {len(body)} bytes; ABS accepts at most 5 GB"
            )
        headers = {
            SSE_HEADER: "aws:kms",
            KMS_HEADER: target.kms_key_arn,
            "Content-Type": "application/x-ndjson",
        }
        try:
            self._http.upload(
                target.upload_url,
                body,
                headers=headers,
                what=f"upload manifest of operation {target.operation_id}",
                read_error=s3_message_reader,
                operation_id=target.operation_id,
            )
        except (AuthenticationError, NotFoundError) as exc:
            raise UploadRejectedError(
                "Upload refused",
                status_code=exc.status_code,
                service_message=exc.service_message,
                operation_id=target.operation_id,
            ) from None
        return len(body)

    def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The operation's status; download URLs in it are fresh for one hour."""
        path = wire.status_path(topic, model, operation_id)
        body = self._api("GET", path, what="operation status", operation_id=operation_id)
        return self._accept_status(body, operation_id)

    def download(self, url: str, sink: IO[bytes]) -> int:
        """Stream a presigned result URL into ``sink``; verified against ``Content-Length``."""
        return self._http.download(url, sink, what="download", read_error=s3_message_reader)

    def results_available(self, operation: Operation) -> bool:
        """Whether a complete operation's output can still be downloaded (the service deletes it
        within 24 hours): a one-byte ranged GET, so nothing large is transferred."""
        if operation.state is not OperationState.COMPLETE or not operation.response_url:
            return False
        check_url(operation.response_url, allow_insecure_http=self.settings.http.allow_insecure_http, what="URL")
        try:
            read_first_byte(self._http, operation.response_url, operation.operation_id)
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
        """Fetch fresh URLs from the status call and stream the output (and metadata) files.

        :return: bytes of output and of metadata written.
        :raises UnexpectedResponseError: when the operation is not complete.
        """
        operation = self.get_operation(operation_id, topic, model)
        if operation.state is not OperationState.COMPLETE or not operation.response_url:
            raise UnexpectedResponseError(
                f"ABS operation {operation_id} is {operation.state.value}, not complete: nothing to download"
            )
        refresh = lambda: self.get_operation(operation_id, topic, model)  # noqa: E731
        output_bytes = self._download_fresh(operation, refresh, output, "response_url")
        metadata_bytes = 0
        if metadata is not None and operation.metadata_url:
            metadata_bytes = self._download_fresh(operation, refresh, metadata, "metadata_url")
        return output_bytes, metadata_bytes

    def _download_fresh(
        self, operation: Operation, refresh: Callable[[], Operation], sink: IO[bytes], which: str
    ) -> int:
        """Download one result file, asking once for fresh URLs if the first has expired."""
        return download_fresh(
            self.download,
            lambda: str(getattr(operation, which)),
            lambda: str(getattr(refresh(), which)),
            sink,
            gone="Result file is gone: the service deletes outputs within 24 hours of completion",
            operation_id=operation.operation_id,
        )

    # --- real-time coding -----------------------------------------------------------------

    def code(self, topic: str, records: list[dict[str, str]], model: str | None = None) -> list[dict[str, Any]]:
        """Code up to 300 records in real time; one bad record fails the whole call."""
        if not 1 <= len(records) <= MAX_REALTIME_RECORDS:
            raise ConfigurationError(f"Real-time coding takes 1 to {MAX_REALTIME_RECORDS} records, got {len(records)}")
        path = f"{wire.topic_path(topic, model)}/code"
        body = self._api("POST", path, what=f"code {len(records)} records", json=records)
        if isinstance(body, dict):
            body = [body]
        if not isinstance(body, list) or len(body) != len(records):
            raise UnexpectedResponseError("ABS real-time coding: response does not match the records sent")
        return body


class AsyncAbsClient(_AbsBase):
    """Async ABS client for the trigger: token and status calls only, never blocking the loop."""

    def __init__(self, settings: AbsSettings, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = AsyncTransport(settings.http, wire.read_abs_error, self.budget, service="ABS")

    async def aclose(self) -> None:
        """Release pooled connections."""
        await self._http.aclose()

    async def token(self) -> str:
        """A valid access token, from the shared cache when fresh."""
        return await self._tokens.get_async(self._fetch_token)

    async def _fetch_token(self) -> Token:
        try:
            body = await self._http.api_json("POST", self.settings.token_url, **self._token_call())
        except AuthenticationError as error:
            raise self._refused(error) from None
        return self._accept_token(body)

    async def _headers(self) -> dict[str, str]:
        return {"Authorization": await self.token(), "Accept": "application/json"}

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The operation's status."""
        path = wire.status_path(topic, model, operation_id)
        body = await self._http.api_json(
            "GET",
            self._url(path),
            headers=self._headers,
            what="operation status",
            operation_id=operation_id,
            on_auth_failure=self._forget_token,
        )
        return self._accept_status(body, operation_id)
