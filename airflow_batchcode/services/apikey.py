"""The plumbing every API-key service client shares (Refinery, super.ai, Gravity).

A service module describes itself with a few class attributes (its name, the header that carries
the key, where its error bodies keep their message) and overrides at most two hooks: ``_explain``
(a clearer error for a status the service gives its own meaning) and ``_data`` (the useful part of
an answer the service wraps). The rest lives here: the shared request budget, secret reporting and
scrubbing, headers, transports and their closing, the ``_api`` call, and the ``download_results``
frame that writes the operation's metadata beside its output.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import IO, Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

from airflow_batchcode.exceptions import ConfigurationError, ServiceError
from airflow_batchcode.services.base import Closing, SecretCallback
from airflow_batchcode.services.budget import BudgetSettings, budget_for
from airflow_batchcode.services.http.aio import AsyncTransport
from airflow_batchcode.services.http.errors import json_message_reader, scrub
from airflow_batchcode.services.http.settings import HttpSettings, check_url
from airflow_batchcode.services.http.sync import SyncTransport

REDACTED = "<redacted>"
MIN_SECRET_CHARS = 4
"""Shorter secrets (other than the API key) are not cut out of messages: they would mangle ordinary words."""


class ApiKeyOrigin:
    """Mixed into an API-key service's settings dataclass: its API root, its limiter key and the
    checks its ``__post_init__`` starts with."""

    service: ClassVar[str]
    """The registry's name of the service."""
    label: ClassVar[str]
    """The service's name in messages."""
    base_url: str
    api_key: str
    rate_limit: float
    http: HttpSettings

    @property
    def api_root(self) -> str:
        """The base URL without a trailing ``/``."""
        return self.base_url.rstrip("/")

    @property
    def limiter_key(self) -> str:
        """The shared limiter's key for this API key at this origin (the key itself only as a short digest)."""
        digest = hashlib.sha256(self.api_key.encode()).hexdigest()[:16]
        return f"{self.service}:{self.api_root}:{digest}"

    def check_connection(self, missing_key: str) -> None:
        """Check for an http(s) origin, a key and a safe API URL.

        :param missing_key: the message when the API key is empty (it says where the key goes).
        """
        if not self.base_url or urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"{self.label} base URL must be an http(s) origin, got {self.base_url!r}")
        if not self.api_key:
            raise ConfigurationError(missing_key)
        check_url(self.api_root, allow_insecure_http=self.http.allow_insecure_http, what="API URL")


S = TypeVar("S", bound=ApiKeyOrigin)


class ApiKeyBase(Generic[S]):
    """What a service's sync and async clients share: settings, limiter, headers, secrets, errors.

    :param settings: the service's settings.
    :param on_secret: called with every secret learnt (the API key first) so callers can mask it.
    """

    service: str
    """The registry's name of the service."""
    key_header: ClassVar[str]
    """The request header carrying the API key."""
    key_prefix: ClassVar[str] = ""
    """Put before the key in :attr:`key_header` (``"Bearer "``)."""
    error_keys: ClassVar[tuple[str, ...]] = ("message",)
    """Where an error body keeps the service's message, first match wins."""

    def __init__(self, settings: S, *, on_secret: SecretCallback | None = None) -> None:
        self.settings = settings
        self._on_secret = on_secret
        self._secrets: set[str] = set()
        self.budget = budget_for(BudgetSettings.of(settings.limiter_key, settings.rate_limit, settings.http.quota))
        self._read_message = json_message_reader(*self.error_keys)
        self._report_secret(settings.api_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings.api_root!r})"

    def _report_secret(self, value: str | None) -> None:
        """Remember a secret (to cut it out of service messages) and hand it to ``on_secret``."""
        if not value:
            return
        self._secrets.add(value)
        if self._on_secret is not None:
            self._on_secret(value)

    def _clean(self, message: str | None) -> str | None:
        """A service message without the secrets this client knows or URL query strings (an echo must not leak)."""
        if not message:
            return message
        key = self.settings.api_key
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret == key or len(secret) >= MIN_SECRET_CHARS:
                message = message.replace(secret, REDACTED)
        return scrub(message, None)

    def _read_error(self, status: int, body: bytes, content_type: str) -> str | None:
        """The service's message in an error body, cleaned (the transports' error reader)."""
        return self._clean(self._read_message(status, body, content_type))

    def _headers(self) -> dict[str, str]:
        return {self.key_header: self.key_prefix + self.settings.api_key, "Accept": "application/json"}

    def _url(self, path: str) -> str:
        return self.settings.api_root + path

    def _explain(self, exc: ServiceError, operation_id: str | None = None, what: str = "") -> ServiceError:
        """A clearer error for ``exc`` where the service gives a status its own meaning; ``exc`` otherwise."""
        return exc

    def _data(self, body: Any, what: str, operation_id: str | None = None) -> Any:
        """The useful part of an API answer: the whole body unless the service wraps it."""
        return body

    @contextlib.contextmanager
    def _service_errors(self, what: str, operation_id: str | None = None) -> Iterator[None]:
        """Raise service errors from the block as :meth:`_explain` words them."""
        try:
            yield
        except ServiceError as exc:
            explained = self._explain(exc, operation_id, what)
            if explained is exc:
                raise
            raise explained from None


class ApiKeyClient(ApiKeyBase[S], Closing):
    """The synchronous half: a pooled transport, one that never retries (for calls that are not
    safe to repeat), closing, the ``_api`` call and the ``download_results`` frame."""

    input_with_create = True
    output_name = "output.jsonl"

    def __init__(self, settings: S, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = SyncTransport(settings.http, self._read_error, self.budget, service=self.settings.label)

    @functools.cached_property
    def _once(self) -> SyncTransport:
        """A transport that tries each request once: for a call whose tries the client drives itself
        (with :meth:`SyncTransport.retrying`, as Gravity's create does, looking for a lost job in between)."""
        once = replace(self.settings.http, retry=replace(self.settings.http.retry, max_attempts=1))
        return SyncTransport(once, self._read_error, self.budget, service=self.settings.label)

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()
        if "_once" in self.__dict__:
            self._once.close()

    def _api(self, method: str, path: str, *, what: str, operation_id: str | None = None, **kwargs: Any) -> Any:
        """Call an API path (retried as the settings say) and return the useful part of its JSON answer."""
        with self._service_errors(what, operation_id):
            body = self._http.api_json(
                method, self._url(path), headers=self._headers, what=what, operation_id=operation_id, **kwargs
            )
        return self._data(body, what, operation_id)

    def download_results(
        self,
        operation_id: str,
        topic: str,
        output: IO[bytes],
        metadata: IO[bytes] | None = None,
        model: str | None = None,
    ) -> tuple[int, int]:
        """Stream a complete operation's raw output into ``output`` and what the service says about it,
        as JSON, into ``metadata`` (see each service's ``_download``).

        :return: bytes written to each.
        """
        written, document = self._download(operation_id, topic, output, model)
        if metadata is None:
            return written, 0
        encoded = self._encode_metadata(document)
        metadata.write(encoded)
        metadata.flush()
        return written, len(encoded)

    def _download(self, operation_id: str, topic: str, output: IO[bytes], model: str | None) -> tuple[int, Any]:
        """Write the output; return its size and the metadata document."""
        raise NotImplementedError

    def _encode_metadata(self, document: Any) -> bytes:
        return json.dumps(document, separators=(",", ":")).encode()


class AsyncApiKeyClient(ApiKeyBase[S]):
    """The async half, for the trigger: status calls only, never blocking the event loop."""

    def __init__(self, settings: S, *, on_secret: SecretCallback | None = None) -> None:
        super().__init__(settings, on_secret=on_secret)
        self._http = AsyncTransport(settings.http, self._read_error, self.budget, service=self.settings.label)

    async def aclose(self) -> None:
        """Release pooled connections."""
        await self._http.aclose()

    async def _api(self, method: str, path: str, *, what: str, operation_id: str | None = None, **kwargs: Any) -> Any:
        """Call an API path and return the useful part of its JSON answer."""
        with self._service_errors(what, operation_id):
            body = await self._http.api_json(
                method, self._url(path), headers=self._headers, what=what, operation_id=operation_id, **kwargs
            )
        return self._data(body, what, operation_id)
