"""The synchronous transport (``requests``): API calls, streamed uploads, resumable downloads.

Every loop here is driven by the retry engine (:mod:`airflow_batchcode.services.http.retry`)
through :meth:`SyncTransport.retrying`, which clients use for their own multi-request calls too.
Redirects are never followed: they could carry a token, a manifest or a presigned request to
another origin, or to plain ``http``, past :func:`~airflow_batchcode.services.http.settings.check_url`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import IO, Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from airflow_batchcode.exceptions import BatchCodeError, IncompleteDownloadError, TransportError
from airflow_batchcode.services.budget import Budget
from airflow_batchcode.services.http.base import Transport
from airflow_batchcode.services.http.bodies import (
    FileBody,
    check_declared_length,
    continues_at,
    copy_body,
    expected_length,
    parse_json,
    read_capped,
)
from airflow_batchcode.services.http.errors import ErrorReader, describe_exception, redirect_error, status_error
from airflow_batchcode.services.http.settings import HttpSettings, check_url
from airflow_batchcode.services.redact import redact_url

log = logging.getLogger("airflow_batchcode.services")

T = TypeVar("T")


class SyncTransport(Transport):
    """A ``requests`` session with the retry engine, rate limit and error mapping.

    Its parameters are :class:`~airflow_batchcode.services.http.base.Transport`'s.
    """

    def __init__(self, settings: HttpSettings, read_error: ErrorReader, budget: Budget, *, service: str) -> None:
        super().__init__(settings, read_error, budget, service=service)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=8)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def close(self) -> None:
        self.session.close()

    def retrying(
        self,
        call: Callable[[], T],
        *,
        what: str,
        idempotent: bool = True,
        handled: tuple[type[BatchCodeError], ...] = (BatchCodeError,),
        on_auth_failure: Callable[[], None] | None = None,
        recover: Callable[[BatchCodeError], T | None] | None = None,
        give_up: Callable[[BatchCodeError], BaseException] | None = None,
        rate_limited: bool = False,
    ) -> T:
        """Run ``call`` until it returns, trying again as the retry engine says.

        :param idempotent: whether repeating ``call`` is harmless (see :class:`~.retry.Attempts`).
        :param handled: the errors this loop deals with; any other propagates at once.
        :param on_auth_failure: drops a cached credential; a refused one is then tried again once.
        :param recover: after an error whose answer may have been lost, finds what ``call`` may
            have done (``None`` when it did nothing, so trying again is safe).
        :param give_up: the exception raised, instead of the last error, when no try is left.
        :param rate_limited: whether ``call`` draws from the budget (a ``Retry-After`` then holds it off,
            and a spent quota is waited out).
        """
        attempts = self.settings.retry.attempts(
            idempotent=idempotent or recover is not None, refresh_auth=on_auth_failure is not None
        )
        while True:
            attempts.start()
            try:
                return call()
            except handled as error:
                if recover is not None and error.answer_lost:
                    found = recover(error)
                    if found is not None:
                        log.warning("%s %s: the answer was lost but the call had been carried out", self.service, what)
                        return found
                delay = self._next_try_in(
                    error, attempts, what=what, rate_limited=rate_limited, on_auth_failure=on_auth_failure
                )
                if delay is None:
                    if give_up is None:
                        raise
                    replacement = give_up(error)
                    if isinstance(replacement, BatchCodeError) and error.retries_spent:
                        replacement.stop_retrying()
                    raise replacement from None
                time.sleep(delay)

    def api_json(
        self, method: str, url: str, *, headers: Callable[[], Mapping[str, str]], what: str, **kwargs: Any
    ) -> Any:
        """Call an API endpoint and return its parsed JSON body (``None`` when empty).

        ``headers`` is called before each try so a refreshed token is used; the other keywords
        are :meth:`request`'s (``rate_limited`` defaults to true here).
        """
        cap = self.settings.max_response_bytes

        def consume(response: requests.Response) -> tuple[bytes, str]:
            check_declared_length(response.headers, cap, what)
            return read_capped(response.iter_content(65536), cap, what), response.headers.get("Content-Type", "")

        kwargs.setdefault("rate_limited", True)
        body, content_type = self.request(
            method, url, headers=headers, what=what, stream=True, consume=consume, **kwargs
        )
        return parse_json(body, what, content_type)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Callable[[], Mapping[str, str]] | None = None,
        what: str,
        operation_id: str | None = None,
        on_auth_failure: Callable[[], None] | None = None,
        rate_limited: bool = False,
        idempotent: bool = True,
        read_error: ErrorReader | None = None,
        body_factory: Callable[[], Any] | None = None,
        consume: Callable[[requests.Response], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Send one request with retries; return the successful (2xx) response.

        :param idempotent: false for a call the service may have carried out although its
            answer was lost (a create): a lost answer then ends the call instead of repeating it.
        :param body_factory: builds the request body afresh for each try (streamed uploads).
        :param consume: reads the successful response inside the retry loop (so a body cut
            off half way is retried too) and returns what this method then returns.
        """
        reader = read_error or self.read_error

        def once() -> Any:
            if rate_limited:
                # a token fetched after the budget's slot would spend the slot's time, and the request
                # would arrive too close to the next one granted: fetch it first (below it is then the
                # cached one, unless it expired while a spent quota was waited out)
                if headers:
                    headers()
                self.budget.acquire(operation=operation_id)
            sent = dict(headers()) if headers else None
            if body_factory is not None:
                kwargs["data"] = body_factory()
            try:
                response = self.session.request(
                    method, url, headers=sent, timeout=self.settings.timeout, allow_redirects=False, **kwargs
                )
                if 300 <= response.status_code < 400:
                    response.close()
                    raise redirect_error(what, response.status_code, response.headers.get("Location"))
                if response.status_code < 400:
                    if consume is None:
                        return response
                    with response:
                        return consume(response)
                with response:
                    body = read_capped(response.iter_content(65536), 65536, what, truncate=True)
            except requests.RequestException as exc:
                raise TransportError(f"{what}: {method} {redact_url(url)} failed ({describe_exception(exc)})") from None
            raise status_error(
                response.status_code, response.headers, body, reader, sent, what=what, operation_id=operation_id
            )

        return self.retrying(
            once, what=what, idempotent=idempotent, on_auth_failure=on_auth_failure, rate_limited=rate_limited
        )

    def download(self, url: str, sink: IO[bytes], *, what: str, read_error: ErrorReader) -> int:
        """Stream ``url`` into ``sink`` and return the bytes written.

        The body must match its ``Content-Length``; a broken transfer is resumed with a
        ``Range`` request (or restarted when the server ignores it). Half a file is never
        reported as a success. Each request is retried on its own; a broken body is then
        retried by an outer loop of the same policy.
        """
        check_url(url, allow_insecure_http=self.settings.allow_insecure_http, what="download URL")
        start = sink.tell()
        written = 0

        def once() -> int:
            nonlocal written
            range_header = {"Range": f"bytes={written}-"} if written else {}
            response = self.request(
                "GET", url, headers=partial(dict, range_header), what=what, read_error=read_error, stream=True
            )
            try:
                with response:
                    if written and response.status_code != 206:
                        sink.seek(start)
                        sink.truncate()
                        written = 0
                    if response.status_code == 206 and not continues_at(response.headers, written):
                        sink.seek(start)
                        sink.truncate()
                        written = 0
                        raise IncompleteDownloadError(
                            f"{what}: the server sent a range that does not continue the file "
                            f"(Content-Range {response.headers.get('Content-Range', 'missing')[:60]!r})"
                        )
                    expected = expected_length(response.headers, written)
                    for count in copy_body(response, sink):
                        written += count
            except requests.RequestException as exc:
                raise IncompleteDownloadError(describe_exception(exc)) from None
            if expected is not None and written != expected:
                raise IncompleteDownloadError(f"{what}: got {written} bytes of {expected} from {redact_url(url)}")
            sink.flush()
            return written

        def broke_off(error: BatchCodeError) -> IncompleteDownloadError:
            return IncompleteDownloadError(
                f"{what}: download of {redact_url(url)} broke off after {written} bytes ({describe_exception(error)})"
            )

        return self.retrying(once, what=what, handled=(IncompleteDownloadError,), give_up=broke_off)

    def upload(
        self,
        url: str,
        body: FileBody,
        *,
        headers: Mapping[str, str],
        what: str,
        read_error: ErrorReader,
        operation_id: str | None = None,
    ) -> requests.Response:
        """PUT ``body`` to a presigned URL, streamed, with ``Content-Length``."""
        check_url(url, allow_insecure_http=self.settings.allow_insecure_http, what="upload URL")
        response = self.request(
            "PUT",
            url,
            headers=lambda: {**headers, "Content-Length": str(len(body))},
            what=what,
            operation_id=operation_id,
            read_error=read_error,
            body_factory=lambda: body,
        )
        response.close()
        return response
