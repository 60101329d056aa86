"""Where a budget keeps its count: the :class:`Ledger` protocol and the per-process ledger.

A ledger answers one question atomically — *may I send a request now?* — with a :class:`Grant`.
It spaces granted requests ``1 / rate`` seconds apart, counts them per quota window, refuses
status polls the window's reserve, and refuses everything while the window is spent or the
service asked us to hold off. :class:`LocalLedger` keeps this in the process (threads of a
worker and the event loop of a triggerer share it); :mod:`.shared` keeps it in Redis for every
process that names the same ``budget_url``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from airflow_batchcode.services.budget.settings import BudgetSettings


@dataclass(frozen=True)
class Grant:
    """A ledger's answer.

    :param granted: True: a request is counted and may be sent after ``delay``; False: nothing was
        counted, wait ``delay`` and ask again.
    :param delay: seconds to wait.
    :param used: requests counted in the current window (this one included when granted).
    :param reset: epoch seconds at which the current window resets.
    :param reason: why a request was refused: ``"quota"`` (window spent), ``"reserve"`` (what is left
        is kept for creates, uploads and downloads) or ``"hold"`` (the service said to wait).
    """

    granted: bool
    delay: float
    used: int
    reset: float
    reason: str = ""


class Ledger(Protocol):
    """The count behind a budget; every method is atomic across the ledger's users."""

    def take(self, now: float, *, poll: bool, operation: str | None = None) -> Grant:
        """Count one request at ``now`` (epoch seconds) if the budget allows it; ``poll`` keeps the reserve.
        A granted request about ``operation`` is also counted for that operation (for the run summary)."""

    def hold(self, until: float) -> None:
        """Refuse every request until epoch second ``until`` (the window is spent, or ``Retry-After``)."""

    def peek(self, now: float) -> tuple[int, float]:
        """Requests counted in the window holding ``now``, and when that window resets."""

    def touch(self, operation: str, *, open_: bool) -> int:
        """Mark ``operation`` open (polled now) or closed; return how many operations are open."""

    def counts(self, operations: list[str]) -> list[int]:
        """Requests counted for each of ``operations`` (kept a day past the window they were made in)."""


class LocalLedger:
    """The per-process :class:`Ledger` (thread-safe)."""

    def __init__(self, settings: BudgetSettings) -> None:
        self.settings = settings
        self._interval = settings.interval
        self._next_slot = 0.0
        self._hold_until = 0.0
        self._window_start = 0.0
        self._used = 0
        self._open: set[str] = set()
        self._by_operation: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _roll(self, now: float) -> None:
        start = self.settings.window.start(now)
        if start > self._window_start:
            self._window_start, self._used = start, 0

    def take(self, now: float, *, poll: bool, operation: str | None = None) -> Grant:
        settings = self.settings
        with self._lock:
            if now < self._hold_until:
                self._roll(now)
                return Grant(False, self._hold_until - now, self._used, settings.window.reset(now), "hold")
            slot = settings.window.clear_of_reset(max(now, self._next_slot))
            self._roll(slot)  # a request counts in the window it is sent in
            reset = settings.window.reset(slot)
            if settings.quota:
                limit = settings.quota - (settings.reserve if poll else 0)
                if self._used >= limit:
                    reason = "reserve" if poll and self._used < settings.quota else "quota"
                    return Grant(False, reset - now, self._used, reset, reason)
            self._next_slot = slot + self._interval
            self._used += 1
            if operation:
                self._by_operation[operation] += 1
            return Grant(True, slot - now, self._used, reset)

    def adopt(self, used: int, reset: float) -> None:
        """Start from a count made elsewhere (the shared ledger's, when it becomes unreachable):
        ``used`` requests in the window that resets at ``reset``."""
        with self._lock:
            start = reset - self.settings.window.length
            if start > self._window_start:
                self._window_start, self._used = start, 0
            if start == self._window_start:
                self._used = max(self._used, used)

    def hold(self, until: float) -> None:
        with self._lock:
            self._hold_until = max(self._hold_until, until)

    def peek(self, now: float) -> tuple[int, float]:
        with self._lock:
            self._roll(now)
            return self._used, self.settings.window.reset(now)

    def touch(self, operation: str, *, open_: bool) -> int:
        with self._lock:
            if open_:
                self._open.add(operation)
            else:
                self._open.discard(operation)
            return len(self._open)

    def counts(self, operations: list[str]) -> list[int]:
        with self._lock:
            return [self._by_operation[operation] for operation in operations]
