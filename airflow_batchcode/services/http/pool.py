"""The async transports' shared connections: one small set of keep-alive clients per event loop.

A triggerer runs many triggers on one event loop. Transports of the same service and timeouts on
that loop lease the same clients here instead of each keeping its own pool; the last transport to
let go closes them.
"""

from __future__ import annotations

import asyncio
import functools
import http.cookiejar
import importlib
import ssl
import threading
import weakref

import httpx

from airflow_batchcode.services.http.settings import HttpSettings

_ClientKey = tuple[str, float, float]
_shared_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, Lease]] = (
    weakref.WeakKeyDictionary()
)
_shared_lock = threading.Lock()
SHARED_CONNECTIONS = 8
"""Requests the transports sharing a lease have in flight at once; later ones wait their turn.

They wait on an ``asyncio.Semaphore`` (O(1) per request) rather than in httpcore's pool, and
each request borrows a client of one connection: httpcore's pool costs O(queued x connections)
plus a readability check of every idle connection on each request and release, which for a
thousand polling triggers came to seconds of CPU (with 8 connections in one pool, ~0.4 ms a poll).
"""


def client_key(service: str, settings: HttpSettings) -> _ClientKey:
    """Transports that agree on this share a client: one service (so a slow one cannot hold up
    another's polls) and what an ``httpx.AsyncClient`` is built from."""
    return (service, settings.connect_timeout, settings.read_timeout)


class Lease:
    """The shared clients of one event loop and client key, and how many transports hold them.

    Up to :data:`SHARED_CONNECTIONS` clients (``httpx.AsyncClient``) of one keep-alive connection each,
    made as concurrency calls for them; a request takes the one used last (its connection is
    the likeliest to be warm) and gives it back.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, key: _ClientKey) -> None:
        self.loop = weakref.ref(loop)
        self.key = key
        self.users = 0
        self.closed = False
        self.gate = asyncio.Semaphore(SHARED_CONNECTIONS)
        self.clients: list[httpx.AsyncClient] = []
        self._idle: list[httpx.AsyncClient] = []

    def take(self) -> httpx.AsyncClient:
        """A client for one request (call only while holding :attr:`gate`)."""
        if self._idle:
            return self._idle.pop()
        _, connect_timeout, read_timeout = self.key
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            verify=shared_tls_context(),
            # transports of different credentials share clients: never carry cookies between them
            cookies=http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
        )
        self.clients.append(client)
        return client

    def give(self, client: httpx.AsyncClient) -> None:
        """Return a client :meth:`take` handed out."""
        self._idle.append(client)

    async def aclose(self) -> None:
        self.closed = True
        clients, self.clients, self._idle = self.clients, [], []
        for client in clients:
            await client.aclose()

    @classmethod
    def acquire(cls, loop: asyncio.AbstractEventLoop, key: _ClientKey) -> Lease:
        """The loop's client for ``key`` (made when there is none, or it was closed), one more user counted."""
        with _shared_lock:
            leases = _shared_clients.setdefault(loop, {})
            lease = leases.get(key)
            if lease is None or lease.closed:
                lease = leases[key] = cls(loop, key)
            lease.users += 1
            return lease

    def release(self) -> bool:
        """Count one user fewer; ``True`` when that was the last (the lease is then no longer shared)."""
        with _shared_lock:
            self.users -= 1
            if self.users > 0:
                return False
            loop = self.loop()
            leases = _shared_clients.get(loop) if loop is not None else None
            if leases is not None and leases.get(self.key) is self:
                del leases[self.key]
            return True


def shared_async_client_count(loop: asyncio.AbstractEventLoop) -> int:
    """How many shared clients ``loop`` holds (for tests and benchmarks)."""
    with _shared_lock:
        return len(_shared_clients.get(loop, {}))


@functools.cache
def warm_up() -> None:
    """Import what ``httpx`` would otherwise import lazily on the first request, on the event loop.

    The transport is built in a worker thread (see ``BatchCodeHook.get_async_client``), so the
    ~25 ms of module loading happens there instead of stalling every trigger of the triggerer.
    """
    for module in ("anyio._backends._asyncio", "anyio.streams.tls", "httpcore._async.http11"):
        importlib.import_module(module)


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process for every async client.

    Loading the CA bundle costs ~45 ms of CPU and ~850 KB per context; a triggerer running a
    thousand triggers would otherwise hold a thousand copies.
    """
    return httpx.create_ssl_context()
