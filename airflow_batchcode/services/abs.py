"""The ABS Occupation Coding Service: OAuth2 tokens, topics and models, async batch coding, real-time coding.

Wire contract: ``shared/SERVICES.md`` §1 and the ABS user guide. API calls carry the raw
token as the ``Authorization`` value (no ``Bearer`` prefix); uploads and downloads go to
presigned S3 URLs. Both clients here share one token cache and one rate limiter per
connection in the process.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    UnexpectedResponseError,
    UploadRejectedError,
)
from airflow_batchcode.services.base import ManifestSource, Operation, OperationState, SecretCallback, UploadTarget
from airflow_batchcode.services.ratelimit import shared_limiter
from airflow_batchcode.services.tokens import Token, token_cache_for
from airflow_batchcode.services.transport import (
    AsyncTransport,
    FileBody,
    HttpSettings,
    SyncTransport,
    check_url,
    json_message_reader,
    s3_message_reader,
)

SERVICE = "abs"
MAX_REALTIME_RECORDS = 300
MAX_RECORD_CHARS = 300
"""Characters allowed across ``occp_text`` and ``tasks_text`` of one record."""
MAX_UPLOAD_BYTES = 5 * 1024**3
KMS_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
SSE_HEADER = "x-amz-server-side-encryption"

read_abs_error = json_message_reader("message", "error_description", "error")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def default_auth_url(base_url: str) -> str:
    """The token URL for an API origin.

    ``https://partner-coder.api.abs.gov.au`` authenticates at
    ``https://partner-coder.auth.abs.gov.au/oauth2/token``; any other origin (an emulator, a
    proxy) is assumed to serve ``/oauth2/token`` itself.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if host.endswith(".api.abs.gov.au"):
        host = host.removesuffix(".api.abs.gov.au") + ".auth.abs.gov.au"
        return urlunsplit(("https", host, "/oauth2/token", "", ""))
    return base_url.rstrip("/") + "/oauth2/token"


@dataclass(frozen=True)
class AbsSettings:
    """What an ABS client needs to know.

    :param base_url: API origin, e.g. ``https://partner-coder.api.abs.gov.au`` (no ``/v1``).
    :param client_id: OAuth2 client id.
    :param client_secret: OAuth2 client secret (hidden from ``repr``).
    :param auth_url: full token URL; derived from ``base_url`` when ``None``.
    :param rate_limit: API requests per second for this connection (0 disables the limiter).
    :param http: timeouts, retries and URL rules.
    """

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    auth_url: str | None = None
    rate_limit: float = 1.0
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        if not self.base_url or urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"ABS base URL must be an http(s) origin, got {self.base_url!r}")
        if not self.client_id or not self.client_secret:
            raise ConfigurationError("ABS needs a client id (login) and client secret (password)")
        check_url(self.api_root, allow_insecure_http=self.http.allow_insecure_http, what="API URL")

    @property
    def api_root(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def token_url(self) -> str:
        return self.auth_url or default_auth_url(self.base_url)

    @property
    def limiter_key(self) -> str:
        return f"{SERVICE}:{self.api_root}:{self.client_id}"


@dataclass(frozen=True)
class Topic:
    """A classification the service codes against."""

    uri_name: str
    full_name: str


@dataclass(frozen=True)
class ModelDescription:
    """One coding model of a topic, as ``GET /v1/topics/{topic}/models`` describes it."""

    model_id: str
    model_version: str = ""
    release_date: str = ""
    model_type: str = ""
    input_format: tuple[str, ...] = ()
    topic_standard: str = ""
    topic_version: str = ""


def segment(value: str, what: str) -> str:
    """A path segment checked to be a plain identifier, so no input can reshape the URL."""
    if not isinstance(value, str) or not _SAFE_SEGMENT.match(value):
        raise ConfigurationError(f"Invalid {what} {value!r}: expected letters, digits, '.', '_' or '-'")
    return quote(value, safe="")


def topic_path(topic: str, model: str | None) -> str:
    """``/v1/topics/{topic}`` or ``/v1/topics/{topic}/models/{model}``."""
    path = f"/v1/topics/{segment(topic, 'topic')}"
    if model:
        path += f"/models/{segment(model, 'model')}"
    return path


def json_kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages about off-contract responses."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _require_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UnexpectedResponseError(f"{what}: response is {json_kind(body)}, not a JSON object")
    return body


def _require_strings(body: dict[str, Any], what: str, *keys: str) -> None:
    """Every ``key`` must be a non-empty string; the error names each one that is not, and why."""
    problems = []
    for key in keys:
        value = body.get(key)
        if key not in body or value is None or value == "":
            problems.append(f"{key} is missing")
        elif not isinstance(value, str):
            problems.append(f"{key} is {json_kind(value)}, not a string")
    if problems:
        raise UnexpectedResponseError(f"{what}: {'; '.join(problems)}")


def parse_token(body: Any) -> Token:
    """Read an OAuth2 token response."""
    what = "ABS token endpoint"
    body = _require_object(body, what)
    _require_strings(body, what, "access_token")
    expires_in = body.get("expires_in", 3600)
    if (
        not isinstance(expires_in, int | float)
        or isinstance(expires_in, bool)
        or not math.isfinite(expires_in)
        or expires_in <= 0
    ):
        raise UnexpectedResponseError(f"{what}: expires_in is {json_kind(expires_in)}, not a positive number")
    return Token.from_lifetime(body["access_token"], float(expires_in))


def parse_create(body: Any) -> UploadTarget:
    """Read a batch-code create response."""
    what = "ABS create operation"
    values = _require_object(body, what)
    _require_strings(values, what, "operationId", "requestUploadUrl", "bucketKmsKeyArn")
    if not _SAFE_SEGMENT.match(values["operationId"]):
        raise UnexpectedResponseError(
            f"{what}: operationId {values['operationId'][:80]!r} is not a plain identifier "
            "(letters, digits, '.', '_' or '-')"
        )
    return UploadTarget(
        operation_id=str(values["operationId"]),
        upload_url=str(values["requestUploadUrl"]),
        kms_key_arn=str(values["bucketKmsKeyArn"]),
    )


def parse_status(body: Any, operation_id: str) -> Operation:
    """Read an operation status response."""
    what = f"ABS operation {operation_id}"
    body = _require_object(body, f"{what}: status")
    if "operationStatus" not in body:
        raise UnexpectedResponseError(f"{what}: status response has no operationStatus")
    raw = body["operationStatus"]
    if not isinstance(raw, str):
        raise UnexpectedResponseError(f"{what}: operationStatus is {json_kind(raw)}, not a string")
    try:
        state = OperationState(raw)
    except ValueError:
        raise UnexpectedResponseError(f"{what}: unknown status {raw[:80]!r}") from None
    error = body.get("error")
    response_url, metadata_url = body.get("responseDownloadUrl"), body.get("metadataDownloadUrl")
    for name, value in (
        ("error", error),
        ("responseDownloadUrl", response_url),
        ("metadataDownloadUrl", metadata_url),
    ):
        if value is not None and not isinstance(value, str):
            raise UnexpectedResponseError(f"{what}: {name} is {json_kind(value)}, not a string")
    if state is OperationState.COMPLETE and not response_url:
        raise UnexpectedResponseError(f"{what}: complete but no responseDownloadUrl")
    return Operation(
        operation_id=operation_id,
        state=state,
        error=error,
        response_url=response_url,
        metadata_url=metadata_url,
        raw_status=raw,
    )


def _require_list_of_objects(body: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(body, list):
        raise UnexpectedResponseError(f"{what}: response is {json_kind(body)}, not a list")
    for index, item in enumerate(body):
        if not isinstance(item, dict):
            raise UnexpectedResponseError(f"{what}: entry {index} is {json_kind(item)}, not an object")
    return body


def _string_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return (value,) if isinstance(value, str) and value else ()


class _AbsBase:
    """What the sync and async clients share: settings, token cache, limiter, secret reporting."""

    service = SERVICE

    def __init__(self, settings: AbsSettings, *, on_secret: SecretCallback | None = None) -> None:
        self.settings = settings
        self._on_secret = on_secret
        self._tokens = token_cache_for(settings.token_url, settings.client_id, settings.client_secret)
        self._limiter = shared_limiter(settings.limiter_key, settings.rate_limit)
        self._basic = base64.b64encode(f"{settings.client_id}:{settings.client_secret}".encode()).decode()
        self._report_secret(settings.client_secret)
        self._report_secret(self._basic)

    def _report_secret(self, value: str | None) -> None:
        if value and self._on_secret is not None:
            self._on_secret(value)

    def _token_request(self) -> dict[str, Any]:
        return {
            "headers": {
                "Authorization": f"Basic {self._basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            "data": {"grant_type": "client_credentials"},
        }

    def _accept_token(self, body: Any) -> Token:
        token = parse_token(body)
        self._report_secret(token.value)
        return token

    def _forget_token(self) -> None:
        self._tokens.invalidate()

    def _url(self, path: str) -> str:
        return self.settings.api_root + path


class AbsClient(_AbsBase):
    """Synchronous client of the ABS Occupation Coding Service.

    :param settings: where and who to connect as.
    :param on_secret: called with every secret learnt (token, presigned URLs) so callers can mask it.
    """

    input_with_create = False
    output_name = "output.jsonl"

    def __init__(self, settings: AbsSettings, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = SyncTransport(settings.http, read_abs_error, self._limiter, service="ABS")

    def __enter__(self) -> AbsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    # --- auth -----------------------------------------------------------------------------

    def token(self) -> str:
        """A valid access token, from the shared cache when fresh."""
        return self._tokens.get(self._fetch_token)

    def _fetch_token(self) -> Token:
        request = self._token_request()
        body = self._http.api_json(
            "POST",
            self.settings.token_url,
            headers=lambda: request["headers"],
            what="token request",
            rate_limited=False,
            data=request["data"],
        )
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
        body = self._api("GET", "/v1/topics", what="list topics")
        items = _require_list_of_objects(body, "ABS list topics")
        return [Topic(uri_name=str(item.get("uriName", "")), full_name=str(item.get("fullName", ""))) for item in items]

    def list_models(self, topic: str) -> list[ModelDescription]:
        """The models of ``topic``, as the service lists them."""
        body = self._api("GET", f"{topic_path(topic, None)}/models", what=f"list models of {topic}")
        items = _require_list_of_objects(body, f"ABS list models of {topic}")
        return [
            ModelDescription(
                model_id=str(item.get("modelId", "")),
                model_version=str(item.get("modelVersion", "")),
                release_date=str(item.get("modelReleaseDate", "")),
                model_type=str(item.get("modelType", "")),
                input_format=_string_tuple(item.get("inputFormat")),
                topic_standard=str(item.get("topicStandard", "")),
                topic_version=str(item.get("topicVersion", "")),
            )
            for item in items
        ]

    # --- async batch coding ---------------------------------------------------------------

    def create_operation(
        self, topic: str, model: str | None = None, *, manifest: ManifestSource | None = None, name: str | None = None
    ) -> UploadTarget:
        """Create a batch-code operation (latest model unless ``model`` names one).

        ABS takes its input by a later upload: ``manifest`` and ``name`` are not used.
        """
        body = self._api("POST", f"{topic_path(topic, model)}/batch-code", what=f"create {topic} operation")
        target = parse_create(body)
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
        path = f"{topic_path(topic, model)}/batch-code/operations/{segment(operation_id, 'operation id')}"
        body = self._api("GET", path, what="operation status", operation_id=operation_id)
        operation = parse_status(body, operation_id)
        self._report_secret(operation.response_url)
        self._report_secret(operation.metadata_url)
        return operation

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
            response = self._http.request(
                "GET",
                operation.response_url,
                headers=lambda: {"Range": "bytes=0-0"},
                what="result availability check",
                operation_id=operation.operation_id,
                read_error=s3_message_reader,
                stream=True,
            )
        except NotFoundError:
            return False
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
        start = sink.tell()
        try:
            try:
                return self.download(str(getattr(operation, which)), sink)
            except AuthenticationError:
                sink.seek(start)
                sink.truncate()
                return self.download(str(getattr(refresh(), which)), sink)
        except NotFoundError as exc:
            raise NotFoundError(
                "Result file is gone: the service deletes outputs within 24 hours of completion",
                status_code=exc.status_code,
                service_message=exc.service_message,
                operation_id=operation.operation_id,
            ) from None

    # --- real-time coding -----------------------------------------------------------------

    def code(self, topic: str, records: list[dict[str, str]], model: str | None = None) -> list[dict[str, Any]]:
        """Code up to 300 records in real time; one bad record fails the whole call."""
        if not 1 <= len(records) <= MAX_REALTIME_RECORDS:
            raise ConfigurationError(f"Real-time coding takes 1 to {MAX_REALTIME_RECORDS} records, got {len(records)}")
        body = self._api("POST", f"{topic_path(topic, model)}/code", what=f"code {len(records)} records", json=records)
        if isinstance(body, dict):
            body = [body]
        if not isinstance(body, list) or len(body) != len(records):
            raise UnexpectedResponseError("ABS real-time coding: response does not match the records sent")
        return body


class AsyncAbsClient(_AbsBase):
    """Async ABS client for the trigger: token and status calls only, never blocking the loop."""

    def __init__(self, settings: AbsSettings, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = AsyncTransport(settings.http, read_abs_error, self._limiter, service="ABS")

    async def aclose(self) -> None:
        """Release pooled connections."""
        await self._http.aclose()

    async def token(self) -> str:
        """A valid access token, from the shared cache when fresh."""
        return await self._tokens.get_async(self._fetch_token)

    async def _fetch_token(self) -> Token:
        request = self._token_request()
        body = await self._http.api_json(
            "POST",
            self.settings.token_url,
            headers=lambda: request["headers"],
            what="token request",
            rate_limited=False,
            data=request["data"],
        )
        return self._accept_token(body)

    async def _headers(self) -> dict[str, str]:
        return {"Authorization": await self.token(), "Accept": "application/json"}

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """The operation's status."""
        path = f"{topic_path(topic, model)}/batch-code/operations/{segment(operation_id, 'operation id')}"
        body = await self._http.api_json(
            "GET",
            self._url(path),
            headers=self._headers,
            what="operation status",
            operation_id=operation_id,
            on_auth_failure=self._forget_token,
        )
        operation = parse_status(body, operation_id)
        self._report_secret(operation.response_url)
        self._report_secret(operation.metadata_url)
        return operation
