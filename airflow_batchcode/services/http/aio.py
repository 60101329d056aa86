"""The async transport (``httpx``) for the trigger's status polls; it never blocks the event loop.

Its retries are the sync transport's: the same engine
(:mod:`airflow_batchcode.services.http.retry`) decides, only the waiting is ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from airflow_batchcode.exceptions import BatchCodeError, TransportError
from airflow_batchcode.services.budget import Budget
from airflow_batchcode.services.http.base import Transport
from airflow_batchcode.services.http.bodies import check_declared_length, decoded_chunks, parse_json, read_capped_async
from airflow_batchcode.services.http.errors import ErrorReader, describe_exception, redirect_error, status_error
from airflow_batchcode.services.http.pool import Lease, client_key, warm_up
from airflow_batchcode.services.http.settings import HttpSettings
from airflow_batchcode.services.redact import redact_url

T = TypeVar("T")


class AsyncTransport(Transport):
    """The async twin of :class:`~airflow_batchcode.services.http.sync.SyncTransport` for status polling.

    Transports of the same service and timeouts on the same event loop share one
    ``httpx.AsyncClient``: a triggerer running a thousand triggers then keeps a few warm
    keep-alive connections (at most :data:`~.pool.SHARED_CONNECTIONS` requests in flight) instead
    of a thousand pools that each reconnect on every poll. The client is leased on first use, on
    the loop that uses it (the transport itself may be built in a worker thread), and
    :meth:`aclose` closes it only when no other transport still holds it.
    """

    def __init__(self, settings: HttpSettings, read_error: ErrorReader, budget: Budget, *, service: str) -> None:
        super().__init__(settings, read_error, budget, service=service)
        self._lease: Lease | None = None
        warm_up()

    def _leased(self) -> Lease:
        """The shared clients of the running event loop (leased on first use)."""
        loop = asyncio.get_running_loop()
        lease = self._lease
        if lease is None or lease.loop() is not loop or lease.closed:
            if lease is not None:
                self._lease = None
                lease.release()
            lease = self._lease = Lease.acquire(loop, client_key(self.service, self.settings))
        return lease

    async def aclose(self) -> None:
        """Give up this transport's share of the client; the last holder on a loop closes it."""
        lease, self._lease = self._lease, None
        # a client leased on another (finished) loop cannot be closed from this one: it is dropped
        if lease is not None and lease.release() and lease.loop() is asyncio.get_running_loop():
            await lease.aclose()

    async def retrying(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        what: str,
        idempotent: bool = True,
        on_auth_failure: Callable[[], None] | None = None,
        rate_limited: bool = False,
    ) -> T:
        """Await ``call`` until it returns, trying again as the retry engine says (see the sync twin)."""
        attempts = self.settings.retry.attempts(idempotent=idempotent, refresh_auth=on_auth_failure is not None)
        while True:
            attempts.start()
            try:
                return await call()
            except BatchCodeError as error:
                delay = self._next_try_in(
                    error, attempts, what=what, rate_limited=rate_limited, on_auth_failure=on_auth_failure
                )
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def api_json(
        self,
        method: str,
        url: str,
        *,
        headers: Callable[[], Any],
        what: str,
        operation_id: str | None = None,
        on_auth_failure: Callable[[], None] | None = None,
        rate_limited: bool = True,
        read_error: ErrorReader | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call an API endpoint with retries and return its parsed JSON body.

        ``headers`` may be a coroutine function (to fetch a token asynchronously).
        """
        reader = read_error or self.read_error

        async def once() -> Any:
            if rate_limited:
                await _resolved(headers())  # the token before the budget's slot, as in the sync transport
                await self.budget.acquire_async(
                    poll=True, operation=operation_id
                )  # status polls leave the budget's reserve alone
            request_headers = await _resolved(headers())
            try:
                lease = self._leased()
                async with lease.gate:
                    client = lease.take()
                    try:
                        async with client.stream(method, url, headers=request_headers, **kwargs) as response:
                            if 300 <= response.status_code < 400:
                                raise redirect_error(what, response.status_code, response.headers.get("Location"))
                            failed = response.status_code >= 400
                            cap = 65536 if failed else self.settings.max_response_bytes
                            if not failed:
                                check_declared_length(response.headers, cap, what)
                            async with contextlib.aclosing(decoded_chunks(response, what)) as chunks:
                                body = await read_capped_async(chunks, cap, what, truncate=failed)
                    finally:
                        lease.give(client)
            except httpx.HTTPError as exc:
                raise TransportError(f"{what}: {method} {redact_url(url)} failed ({describe_exception(exc)})") from None
            if response.status_code < 400:
                return parse_json(body, what, response.headers.get("Content-Type", ""))
            raise status_error(
                response.status_code,
                response.headers,
                body,
                reader,
                request_headers,
                what=what,
                operation_id=operation_id,
            )

        return await self.retrying(once, what=what, on_auth_failure=on_auth_failure, rate_limited=rate_limited)


async def _resolved(value: Any) -> Any:
    """``value``, awaited when it is a coroutine (``headers`` may be a coroutine function)."""
    return await value if asyncio.iscoroutine(value) else value
