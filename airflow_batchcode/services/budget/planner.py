"""Adaptive polling: when the next status poll of an open operation should be.

Every open operation on a connection polls from the same budget, so the planner spreads what
the window has left over the operations still open:

* never more often than the operation's ``poll_interval``;
* less often as it ages (a tenth of its age), up to the service's advice (10 minutes for ABS);
* less often as the window's budget shrinks: the requests left, minus the reserve kept for
  creates, uploads and downloads, are shared out over the open operations and the time left
  in the window; with nothing left for polls, the next poll waits for the window to reset;
* never faster than the per-second rate allows for all open operations together.

:func:`plan_poll` is the pure decision; :class:`PollPacer` asks the budget for the figures,
keeps the operation counted as open and logs why a poll was stretched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from airflow_batchcode.services.budget.budget import Budget, BudgetStatus

DEFAULT_ADVICE = 600.0
"""The longest gap age alone stretches a poll to, for services that advise nothing."""
AGE_SHARE = 0.1
"""An operation's polls are at least this share of its age apart (before the advice cap)."""


@dataclass(frozen=True)
class PollPlan:
    """When to poll next.

    :param delay: seconds until the next poll.
    :param reason: why the budget stretched it past what the interval and age ask for (to log), if it did.
    """

    delay: float
    reason: str | None = None


def plan_poll(
    *,
    poll_interval: float,
    age: float,
    advice: float,
    status: BudgetStatus | None,
    open_operations: int,
    reserve: int,
    rate: float,
    now: float,
) -> PollPlan:
    """The next poll of one operation (see the module docstring for the rules).

    :param age: seconds since the operation's wait started.
    :param advice: the service's advised longest gap between polls.
    :param status: the budget's window (``None``: no quota to share).
    :param open_operations: operations polling on the budget (this one included).
    :param reserve: requests of each window kept for creates, uploads and downloads.
    :param rate: requests per second of the budget (0: none).
    """
    ops = max(1, open_operations)
    delay = min(max(poll_interval, advice), max(poll_interval, age * AGE_SHARE))
    reason = None
    if status is not None and status.left is not None:
        window_left = max(0.0, status.reset - now)
        spendable = status.left - reserve
        if spendable <= 0:
            if window_left + 1.0 > delay:
                delay = window_left + 1.0
                reason = (
                    f"next poll in {delay:.0f} s: {status.left} requests left in this window, kept for creates, "
                    f"uploads and downloads; {ops} open operations wait for the reset"
                )
        else:
            share = min(window_left * ops / spendable, window_left + 1.0)
            if share > delay:
                delay = share
                reason = (
                    f"next poll in {delay:.0f} s: {status.left} requests left in this window for {ops} open operations"
                )
    if rate > 0 and ops / rate > delay:
        delay = ops / rate
        reason = f"next poll in {delay:.0f} s: {ops} open operations share {rate:g} requests/s"
    return PollPlan(delay, reason)


class PollPacer:
    """Paces the polls of one operation on its connection's budget (in a trigger).

    :param budget: the connection's budget (``None``: polls follow ``poll_interval`` and age only).
    :param operation_id: the operation, counted as open on the budget while it is polled.
    :param advice: the service's advised longest gap between polls.
    :param log: where a stretched poll is explained.
    """

    def __init__(self, budget: Budget | None, operation_id: str, *, advice: float | None, log: Any) -> None:
        self.budget = budget
        self.operation_id = operation_id
        self.advice = DEFAULT_ADVICE if advice is None else advice
        self.log = log or logging.getLogger("airflow_batchcode.services")
        self.started = time.time()
        self._last_reason: str | None = None

    async def next_delay(self, poll_interval: float) -> float:
        """Seconds until the next poll; logs the reason when the budget stretched it."""
        budget = self.budget
        status: BudgetStatus | None = None
        ops = 1
        if budget is not None and budget.limited:
            ops = await budget.touch_async(self.operation_id)
            status = await budget.status_async() if budget.settings.quota else None
        now = time.time()
        plan = plan_poll(
            poll_interval=poll_interval,
            age=now - self.started,
            advice=self.advice,
            status=status,
            open_operations=ops,
            reserve=budget.settings.reserve if budget is not None else 0,
            rate=budget.settings.rate if budget is not None else 0.0,
            now=now,
        )
        if plan.reason and plan.delay >= poll_interval + 1.0 and plan.reason != self._last_reason:
            self.log.info("%s", plan.reason)
        self._last_reason = plan.reason
        return plan.delay

    async def close(self) -> None:
        """The operation no longer polls: stop counting it as open."""
        if self.budget is not None and self.budget.limited:
            await self.budget.touch_async(self.operation_id, open_=False)
