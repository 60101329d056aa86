"""A request-rate limiter shared by every client of one connection in a process.

The rate limit belongs to the service account, not to one client object: the hundreds of
triggers in one triggerer event loop and the operators in a worker all draw from the same
limiter. A limiter hands out time slots; sync callers sleep until theirs, async callers
``await asyncio.sleep``, so the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import threading
import time

_registry: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()


class RateLimiter:
    """Spaces requests at least ``1 / rate`` seconds apart; ``rate <= 0`` disables it.

    :param rate: requests per second.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next_slot = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Claim the next free slot; return how many seconds to wait for it."""
        if not self._interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
            return slot - now

    def hold_off(self, seconds: float) -> None:
        """Push every later slot at least ``seconds`` into the future (after a 429's ``Retry-After``)."""
        with self._lock:
            self._next_slot = max(self._next_slot, time.monotonic() + seconds)

    def acquire(self) -> None:
        """Block the calling thread until its slot."""
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)

    async def acquire_async(self) -> None:
        """Wait for a slot without blocking the event loop."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


def shared_limiter(key: str, rate: float) -> RateLimiter:
    """The process-wide limiter for ``key`` (one per connection), created on first use.

    A later call with a different ``rate`` replaces the limiter, so a changed connection
    setting takes effect without a restart.
    """
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None or limiter.rate != rate:
            limiter = _registry[key] = RateLimiter(rate)
        return limiter
