"""What the sync and async transports share: their settings, and acting on the retry engine's answer."""

from __future__ import annotations

import logging
from collections.abc import Callable

from airflow_batchcode.exceptions import BatchCodeError, QuotaExceededError, ServiceError
from airflow_batchcode.services.budget import Budget
from airflow_batchcode.services.http.errors import ErrorReader
from airflow_batchcode.services.http.retry import Retry
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

    def _before_retry(
        self,
        decision: Retry,
        error: BatchCodeError,
        *,
        what: str,
        attempt: int,
        rate_limited: bool,
        on_auth_failure: Callable[[], None] | None,
    ) -> float:
        """Carry out a :class:`~.retry.Retry`: refresh the credential, or hold the limiter off for the
        service's ``Retry-After`` and log the failure. :return: the seconds to wait before the next try."""
        if decision.refresh_auth and on_auth_failure is not None:
            on_auth_failure()
            return 0.0
        if rate_limited and isinstance(error, ServiceError) and error.retry_after is not None:
            self.budget.hold_off(error.retry_after)
        log.warning(
            "%s %s: try %d of %d failed (%s); retrying in %.1f s",
            self.service,
            what,
            attempt,
            self.settings.retry.max_attempts,
            error,
            decision.delay,
        )
        return decision.delay

    def _quota_wait(self, error: BatchCodeError, *, rate_limited: bool) -> float | None:
        """When ``error`` says the quota is spent on a budgeted call, the seconds until the window resets
        (the budget then holds every call on the connection until then, and the call is tried again
        instead of failing); ``None`` for any other error."""
        if not (rate_limited and isinstance(error, QuotaExceededError)):
            return None
        return self.budget.exhausted(error.retry_after)
