"""What the sync and async transports share: their settings, and acting on the retry engine's answer."""

from __future__ import annotations

import logging
from collections.abc import Callable

from airflow_batchcode.exceptions import BatchCodeError, QuotaExceededError, ServiceError
from airflow_batchcode.services.budget import Budget
from airflow_batchcode.services.http.errors import ErrorReader
from airflow_batchcode.services.http.retry import Attempts
from airflow_batchcode.services.http.settings import HttpSettings

log = logging.getLogger("airflow_batchcode.services")


class Transport:
    """The part of a transport that is neither sync nor async.

    :param settings: timeouts, retry policy and URL rules.
    :param read_error: extracts the service's message from API error bodies.
    :param budget: the connection's request budget (API calls only).
    :param service: the service's name, for messages.
    """

    def __init__(self, settings: HttpSettings, read_error: ErrorReader, budget: Budget, *, service: str) -> None:
        self.settings = settings
        self.read_error = read_error
        self.budget = budget
        self.service = service

    def _next_try_in(
        self,
        error: BatchCodeError,
        attempts: Attempts,
        *,
        what: str,
        rate_limited: bool,
        on_auth_failure: Callable[[], None] | None,
    ) -> float | None:
        """What both transports' retry loops do after ``error``: the seconds to wait before the next
        try, or ``None`` when the retry engine says the error is final (the loop then raises it, marked
        final for any loop around this one, its message saying why when the engine says).

        A spent quota on a budgeted call is waited out without using a try (the budget holds every
        call on the connection until the window resets). Otherwise the engine's :class:`~.retry.Retry`
        is carried out: the credential is refreshed, or the limiter is held off for the service's
        ``Retry-After``, and the failure is logged.
        """
        if rate_limited and isinstance(error, QuotaExceededError):
            return self.budget.exhausted(error.retry_after)
        decision = attempts.after(error)
        if decision is None:
            if attempts.spends:
                error.stop_retrying(attempts.final_note)
            return None
        if decision.refresh_auth and on_auth_failure is not None:
            on_auth_failure()
            return 0.0
        if rate_limited and isinstance(error, ServiceError) and error.retry_after is not None:
            self.budget.hold_off(error.retry_after)
        log.warning(
            "%s %s: try %d of %d failed (%s); retrying in %.1f s",
            self.service,
            what,
            attempts.number,
            self.settings.retry.max_attempts,
            error,
            decision.delay,
        )
        return decision.delay
