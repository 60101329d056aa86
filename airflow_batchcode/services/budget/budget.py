"""The request budget of one connection: what every request of a service account draws from.

Transports call :meth:`Budget.acquire` (or :meth:`Budget.acquire_async`) before each API
request. It waits for the next slot of the per-second rate and counts the request in the quota
window; when the window is spent it waits for the reset (logging when that is) instead of
failing. A 429 "Limit Exceeded" from the service is reported with :meth:`Budget.exhausted`, after
which every call on the connection waits for the reset too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from airflow_batchcode.services.budget.ledger import Grant, Ledger, LocalLedger
from airflow_batchcode.services.budget.settings import BudgetSettings
from airflow_batchcode.services.budget.window import utc

log = logging.getLogger("airflow_batchcode.services")

RETRY_SHARED_AFTER = 30.0
"""After Redis failed, the seconds during which the per-process ledger is used before Redis is tried again."""

MAX_LATE = 3
"""Slots one request gives up for waking late before it is sent anyway."""

T = TypeVar("T")


@dataclass(frozen=True)
class BudgetStatus:
    """Where a budget stands.

    :param used: requests counted in the current window (by every process sharing the budget).
    :param left: requests left in the window (``None``: no quota).
    :param reset: epoch seconds at which the window resets.
    :param made: requests this process has sent on the budget since it started.
    :param shared: whether the count is the shared (Redis) one.
    """

    used: int
    left: int | None
    reset: float
    made: int
    shared: bool


class Budget:
    """Rate (per second) and quota (per window) of one service account.

    Per process unless ``shared`` is given; an unreachable shared ledger falls back to the
    per-process one with a warning and never fails a call.

    :param settings: rate, quota and window.
    :param shared: the ledger every process shares (:class:`~.shared.RedisLedger`), if any.
    """

    def __init__(self, settings: BudgetSettings, shared: Ledger | None = None) -> None:
        self.settings = settings
        self.rate = settings.rate
        self.made = 0
        self._local = LocalLedger(settings)
        self._shared = shared
        self._shared_down_until = 0.0
        self._announced_reset = 0.0
        self._last_shared: tuple[int, float] | None = None
        self._lock = threading.Lock()

    @property
    def limited(self) -> bool:
        """Whether there is anything to count (a rate, a quota or a shared ledger)."""
        return bool(self.settings.rate or self.settings.quota or self._shared)

    def _ledger(self) -> tuple[Ledger, bool]:
        if self._shared is not None and time.time() >= self._shared_down_until:
            return self._shared, True
        return self._local, False

    def _call(self, action: Callable[[Ledger], T]) -> T:
        """Run ``action`` on the shared ledger, or on the local one while the shared one is unreachable."""
        ledger, shared = self._ledger()
        if not shared:
            return action(ledger)
        try:
            return action(ledger)
        except Exception as exc:  # redis errors, refused connections, timeouts: never fail the run
            with self._lock:
                first = self._shared_down_until == 0.0 or time.time() >= self._shared_down_until
                self._shared_down_until = time.time() + RETRY_SHARED_AFTER
            if self._last_shared is not None:  # carry on from the shared count, not from zero
                self._local.adopt(*self._last_shared)
            if first:
                log.warning(
                    "The shared request budget is unreachable (%s); this process keeps its own budget "
                    "and tries Redis again in %.0f s",
                    type(exc).__name__,
                    RETRY_SHARED_AFTER,
                )
            return action(self._local)

    def take(self, *, poll: bool = False, operation: str | None = None) -> Grant:
        """Ask for one request now (see :meth:`~.ledger.Ledger.take`); counts it when granted."""
        grant = self._call(lambda ledger: ledger.take(time.time(), poll=poll, operation=operation))
        if self._ledger()[1]:
            self._last_shared = (grant.used, grant.reset)
        if not grant.granted:
            self._announce(grant)
        return grant

    def _announce(self, grant: Grant) -> None:
        """Log once per window that calls wait for its reset (and why)."""
        if (grant.reason == "hold" and grant.delay < 60) or grant.reset <= self._announced_reset:
            return
        with self._lock:
            if grant.reset <= self._announced_reset:
                return
            self._announced_reset = grant.reset
        quota = self.settings.quota
        if grant.reason == "reserve":
            why = f"only the reserve for creates, uploads and downloads is left ({grant.used} of {quota} used)"
        elif grant.reason == "quota":
            why = f"the request quota is spent ({grant.used} of {quota} in this window)"
        else:
            why = "the service said the request quota is spent"
        log.warning(
            "%s on %s: calls wait until %s", why.capitalize(), self.settings.key, utc(time.time() + grant.delay)
        )

    def acquire(self, *, poll: bool = False, operation: str | None = None) -> None:
        """Block until a request may be sent (waiting out a spent window), and count it (for
        ``operation`` too, when the request is about one)."""
        if not self.limited:
            return
        late = 0
        while True:
            grant, due = self._take_due(poll, None if late else operation)
            if grant.delay > 0:
                time.sleep(grant.delay)
            given_up = self._after_wait(grant, due, late)
            if given_up is None:
                return
            late = given_up

    async def acquire_async(self, *, poll: bool = False, operation: str | None = None) -> None:
        """:meth:`acquire` without blocking the event loop (a shared ledger is asked from a thread)."""
        if not self.limited:
            return
        late = 0
        while True:
            grant, due = await self._in_thread(functools.partial(self._take_due, poll, None if late else operation))
            if grant.delay > 0:
                await asyncio.sleep(grant.delay)
            given_up = self._after_wait(grant, due, late)
            if given_up is None:
                return
            late = given_up

    def _take_due(self, poll: bool, operation: str | None) -> tuple[Grant, float]:
        """:meth:`take`, and the monotonic time its slot is due, stamped as soon as the ledger answered
        (time spent before the ledger saw the question, queued for a thread, is not lateness)."""
        grant = self.take(poll=poll, operation=operation)
        return grant, time.monotonic() + grant.delay

    def _after_wait(self, grant: Grant, due: float, late: int) -> int | None:
        """The step after waiting for ``grant``, shared by both loops: ``None`` when the request goes
        out now (counted as sent by this process), else the slots given up so far for this request.

        A granted request goes out unless its caller woke late for its slot, ``due`` (a busy machine
        or event loop can wake it late, and then it would arrive too close to the next request
        granted); it then gives the slot up and asks again, at most ``MAX_LATE`` times. A slot given
        up stays counted in the window (an overcount only ever sends less), not for its operation.
        """
        if not grant.granted:
            return late
        overdue = time.monotonic() - due
        if overdue > self.settings.lateness_allowed and late < MAX_LATE:
            log.debug("Woke %.3f s after a request slot on %s: asking for a later one", overdue, self.settings.key)
            return late + 1
        with self._lock:
            self.made += 1
        return None

    async def _in_thread(self, call: Callable[[], T]) -> T:
        if self._shared is None:
            return call()
        return await asyncio.to_thread(call)

    def hold_off(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a 429's ``Retry-After``)."""
        until = time.time() + seconds
        self._local.hold(until)
        if self._shared is not None:
            self._call(lambda ledger: ledger.hold(until))

    def exhausted(self, retry_after: float | None = None) -> float:
        """The service said the quota is spent (429 "Limit Exceeded"): hold every call until the
        window resets (or for ``retry_after``, when the service named a time). :return: seconds to wait."""
        now = time.time()
        until = now + retry_after if retry_after else self.settings.window.reset(now)
        self.hold_off(until - now)
        log.warning(
            "The service answered Limit Exceeded on %s: every call waits for the quota window to reset at %s "
            "(a task making one keeps running, and holds its worker slot, until then)",
            self.settings.key,
            utc(until),
        )
        return until - now

    def status(self) -> BudgetStatus:
        """Requests used and left in the current window, and what this process sent."""
        used, reset = self._call(lambda ledger: ledger.peek(time.time()))
        quota = self.settings.quota
        left = max(0, quota - used) if quota else None
        return BudgetStatus(used, left, reset, self.made, self._ledger()[1])

    def requests_for(self, operations: list[str]) -> int:
        """Requests counted for ``operations`` (by every process sharing the budget; per process otherwise)."""
        return sum(self._call(lambda ledger: ledger.counts(operations)))

    def touch(self, operation: str, *, open_: bool = True) -> int:
        """Mark a polled ``operation`` open (or closed); return how many are open on the budget."""
        return self._call(lambda ledger: ledger.touch(operation, open_=open_))

    async def touch_async(self, operation: str, *, open_: bool = True) -> int:
        """:meth:`touch` without blocking the event loop."""
        return await self._in_thread(lambda: self.touch(operation, open_=open_))

    async def status_async(self) -> BudgetStatus:
        """:meth:`status` without blocking the event loop."""
        return await self._in_thread(self.status)


_budgets: dict[str, Budget] = {}
_budgets_lock = threading.Lock()


def budget_for(settings: BudgetSettings) -> Budget:
    """The process-wide budget of ``settings.key`` (one per service account), created on first use.

    A later call with different settings replaces it, so a changed connection takes effect
    without a restart.
    """
    with _budgets_lock:
        budget = _budgets.get(settings.key)
        if budget is None or budget.settings != settings:
            budget = _budgets[settings.key] = Budget(settings, _shared_ledger(settings))
        return budget


def _shared_ledger(settings: BudgetSettings) -> Any:
    if not settings.url:
        return None
    from airflow_batchcode.services.budget.shared import RedisLedger, redis_client

    try:
        return RedisLedger(settings, redis_client(settings.url))
    except ImportError:
        log.warning("budget_url is set but the redis package is not installed: the budget is per process")
        return None
