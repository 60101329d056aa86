"""OAuth2 client-credentials tokens, cached per connection for the whole process.

The ABS gateway answers 403 when one organisation asks for too many tokens, so every client
built for the same credentials (operators, and every trigger in a triggerer) shares one
cached token until shortly before it expires. Fetching is single-flight: concurrent
callers wait for the one request in progress instead of sending their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

REFRESH_MARGIN_SECONDS = 120.0
"""A token is renewed this long before its stated expiry (or at 90 % of a shorter lifetime)."""


@dataclass(frozen=True)
class Token:
    """An access token and when to stop using it (``time.monotonic`` seconds)."""

    value: str
    renew_at: float

    @classmethod
    def from_lifetime(cls, value: str, expires_in: float) -> Token:
        margin = min(REFRESH_MARGIN_SECONDS, expires_in * 0.1)
        return cls(value, time.monotonic() + max(0.0, expires_in - margin))

    @property
    def fresh(self) -> bool:
        return time.monotonic() < self.renew_at


class TokenCache:
    """The cached token of one set of credentials."""

    def __init__(self) -> None:
        self._token: Token | None = None
        self._lock = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, fetch: Callable[[], Token]) -> str:
        """The cached token, fetching a new one (once, under a lock) when stale."""
        token = self._token
        if token is not None and token.fresh:
            return token.value
        with self._lock:
            token = self._token
            if token is None or not token.fresh:
                token = self._token = fetch()
            return token.value

    async def get_async(self, fetch: Callable[[], Awaitable[Token]]) -> str:
        """Like :meth:`get`, without blocking the event loop."""
        token = self._token
        if token is not None and token.fresh:
            return token.value
        loop = asyncio.get_running_loop()
        lock = self._async_locks.setdefault(loop, asyncio.Lock())
        async with lock:
            token = self._token
            if token is None or not token.fresh:
                token = self._token = await fetch()
            return token.value

    def invalidate(self, value: str | None = None) -> None:
        """Forget the token (only if it is still ``value``, when given): the gateway refused it."""
        token = self._token
        if token is not None and (value is None or token.value == value):
            self._token = None


_caches: dict[str, TokenCache] = {}
_caches_lock = threading.Lock()


def token_cache_for(auth_url: str, client_id: str, client_secret: str) -> TokenCache:
    """The process-wide cache for these credentials (keyed by a hash, never the secret itself)."""
    key = hashlib.sha256(f"{auth_url}\0{client_id}\0{client_secret}".encode()).hexdigest()
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = TokenCache()
        return cache
